"""Routes about duplicates: review the groups, move the chosen copies away, undo.

Moving goes through the library's journal, as ``facesearch dedupe --move-to DEST --yes`` does
(:func:`facesearch.search.dedupe.apply_actions`): journaled first, never deleting, undone by
``POST /api/undo`` as by ``facesearch undo``. Three rules keep a page (or a script) from moving
what it should not:

- the request says ``"confirm": true`` (the page asks the user first): nothing moves otherwise;
- the groups are *recomputed* here and a chosen group must be one of them (same members), with its
  keeper one of its members, so no path sent by a client is moved unless the index calls it a copy;
- the destination lies under a folder ``serve --allow-move-root`` named (none: moving is refused),
  resolved first, as index roots are (``docs/security.md``).
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Depends, Request

from facesearch.core.errors import DataError
from facesearch.service.bodies import json_object
from facesearch.service.security import Forbidden, confine
from facesearch.service.state import Service, service

router = APIRouter()
APPLY_EXAMPLE = '{"move_to": "/folder", "groups": [{"members": [PATH, …], "keeper": PATH}], "confirm": true}'
MAX_GROUPS = 10_000


@router.get("/api/dedupe")
def dedupe(scope: str = "faces", s: Service = Depends(service)) -> dict:
    """``dedupe --json`` (``?scope=photos`` for duplicate photos, what the page moves)."""
    from facesearch.search.dedupe import DedupeOptions, find_duplicates

    return find_duplicates(DedupeOptions(index=s.index, scope=scope))


@router.post("/api/dedupe/apply")
async def apply(request: Request, s: Service = Depends(service)) -> dict:
    """Move every non-keeper of the chosen photo groups under ``move_to``, journaled; answers the
    library's ``{"actions", "moved", "journal"}``."""
    from facesearch.search.dedupe import DedupeOptions, apply_actions, find_duplicates

    body = await json_object(request, APPLY_EXAMPLE)
    if body.get("confirm") is not True:
        raise DataError("moving files needs confirmation: nothing was moved", hint='send "confirm": true')
    dest = check_move_root(body.get("move_to"), s.opts.move_roots)
    report = find_duplicates(DedupeOptions(index=s.index, scope="photos"))
    chosen = chosen_groups(report["groups"], body.get("groups"))
    result = apply_actions({**report, "groups": chosen}, s.index, str(dest), yes=True)
    return {**result, "move_to": str(dest)}


@router.post("/api/undo")
async def undo(request: Request, s: Service = Depends(service)) -> dict:
    """``{"confirm": true}``: ``facesearch undo`` (the newest move not yet undone); the restored photos
    are then indexed again by a job (``job`` in the answer), so they are found as before."""
    from facesearch.core.journal_file import read_journal
    from facesearch.search.dedupe import undo

    body = await json_object(request, '{"confirm": true}')
    if body.get("confirm") is not True:
        raise DataError("undo moves files back and needs confirmation: nothing was moved",
                        hint='send "confirm": true')
    result = undo(s.index)
    back = sorted({r["src"] for r in read_journal(result["journal"]) if r.get("type") == "intent"
                   and r.get("kind") in ("move", "symlink") and Path(r["src"]).is_file()})  # photos, not sidecars
    if back:
        result["job"] = s.jobs.submit(back).to_dict()
        result["hint"] = "the restored photos are being indexed again (GET /api/jobs/ID)"
    return result


def chosen_groups(groups: list[dict], choices) -> list[dict]:
    """The report's groups the client chose (same member paths), each with the keeper it chose."""
    if not isinstance(choices, list) or not choices or len(choices) > MAX_GROUPS:
        raise DataError("choose one or more groups to act on", hint=f"send {APPLY_EXAMPLE}")
    by_members = {frozenset(m["path"] for m in g["members"]): g for g in groups}
    out = []
    for c in choices:
        members, keeper = (c.get("members"), c.get("keeper")) if isinstance(c, dict) else (None, None)
        if not isinstance(members, list) or not all(isinstance(p, str) for p in members):
            raise DataError("each group is {\"members\": [PATH, …], \"keeper\": PATH}", hint=f"send {APPLY_EXAMPLE}")
        group = by_members.get(frozenset(members))
        if group is None or keeper not in members:
            raise DataError("a chosen group is not a duplicate group of the index now (or its keeper is not in it)",
                            hint="reload the duplicates and choose again: nothing was moved")
        reason = group["keeper_reason"] if keeper == group["keeper"] else "chosen by you"
        out.append({**group, "keeper": keeper, "keeper_reason": reason})
    return out


def check_move_root(path, roots) -> Path:
    """The destination folder resolved, if it lies under one of ``roots``; else Forbidden."""
    if not isinstance(path, str) or not path.strip():
        raise DataError("name the folder to move the copies to", hint=f"send {APPLY_EXAMPLE}")
    where = confine(Path(path).expanduser(), roots, hint="send a folder on the server's disk")
    if where is not None:
        return where
    named = ", ".join(str(Path(r)) for r in roots) or "none"
    raise Forbidden(f"{path} is outside the folders this service may move photos to (allowed: {named})",
                    hint="start serve with --allow-move-root FOLDER, or move them with `facesearch dedupe --move-to`")
