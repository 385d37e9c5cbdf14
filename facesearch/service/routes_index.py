"""Routes that add to the index: an index job (folders on the server, or one uploaded photo), its state.

A job reads only what the user allowed: folders under a ``serve --allow-index-root`` root, and
photos uploaded into the index's own ``uploads/`` folder. Paths are resolved first, so neither
``..`` nor a symlink given as the path leads out of a root, and the job reads the path as it was
resolved then: one that resolves elsewhere by the time the job runs fails it (``jobs.py``).
"""

from __future__ import annotations

import os
from pathlib import Path

from fastapi import APIRouter, Depends, HTTPException, Request

from facesearch.core.errors import DataError
from facesearch.service.bodies import UPLOADS, json_object, media_type, save_upload
from facesearch.service.security import Forbidden, confine
from facesearch.service.state import Service, service

router = APIRouter()
PATHS_EXAMPLE = '{"paths": ["/photos/…", …]}'


@router.post("/api/index")
async def index(request: Request, s: Service = Depends(service)) -> dict:
    """Queue an index run: ``{"paths": [...], "label_from_folder": bool}``, or a multipart ``image``
    (and ``label``); answers the job (``GET /api/jobs/ID`` follows it)."""
    if media_type(request) == "multipart/form-data":
        return await _upload(request, s)
    body = await json_object(request, PATHS_EXAMPLE + ", or a multipart photo")
    paths = body.get("paths")
    if not isinstance(paths, list) or not paths or not all(isinstance(p, str) for p in paths):
        raise DataError(f"send {PATHS_EXAMPLE}, or a multipart photo", hint="paths on the server's disk")
    checked = [check_root(p, s.opts.index_roots, s.index) for p in paths]  # resolved once, here: what the job reads
    return s.jobs.submit(checked, bool(body.get("label_from_folder"))).to_dict()


async def _upload(request: Request, s: Service) -> dict:
    try:
        form = await request.form()
    except Exception as e:  # a malformed multipart body: Starlette's own parser errors
        raise DataError(f"the multipart body does not parse ({e})", hint="send the photo as the field 'image'") from None
    photo, label = form.get("image"), form.get("label")
    if not hasattr(photo, "read"):
        raise DataError("send the photo as the multipart field 'image'", hint="and optionally 'label'")
    saved = save_upload(s.index, photo, label if isinstance(label, str) and label else None)
    return s.jobs.submit([saved], label_from_folder=bool(label)).to_dict()


@router.get("/api/jobs/{job_id}")
def job(job_id: str, s: Service = Depends(service)) -> dict:
    found = s.jobs.get(job_id)
    if found is None:
        raise HTTPException(404, f"no job {job_id}")
    return found.to_dict()


def check_root(path: str, roots, index: os.PathLike) -> Path:
    """``path`` resolved, if it lies under one of ``roots`` or the index's ``uploads/``; else Forbidden."""
    where = confine(Path(path), (*roots, Path(index) / UPLOADS), hint="send folder paths on the server's disk")
    if where is not None:
        return where
    named = ", ".join(str(Path(r)) for r in roots) or "none"
    raise Forbidden(f"{path} is outside the folders this service may index (allowed: {named})",
                    hint="start serve with --allow-index-root FOLDER for each folder it may read, or upload photos")
