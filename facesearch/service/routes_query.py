"""Routes that read: the page, health, a query photo, a face's thumbnail."""

from __future__ import annotations

import io
import os
import stat

from fastapi import APIRouter, Depends, File, Form, HTTPException, Request, UploadFile
from fastapi.responses import HTMLResponse, Response

from facesearch.core.errors import DataError
from facesearch.service.bodies import MAX_ID, decode_upload, upload_name
from facesearch.service.state import Service, service
from facesearch.store.face_index import FaceIndex

MAX_TOP = 100

router = APIRouter()


@router.get("/", response_class=HTMLResponse)
def page() -> str:
    from facesearch.service.page import PAGE

    return PAGE


@router.get("/app.js")
@router.get("/app.css")
def page_file(request: Request) -> Response:
    """The page's script and style, served as files: the CSP (``headers.py``) runs nothing inline."""
    from facesearch.service.page import FILES

    text, media = FILES[request.url.path]
    return Response(text, media_type=media)


@router.get("/api/health")
def health(s: Service = Depends(service)) -> dict:
    with FaceIndex.open(s.index, readonly=True) as store:
        return {"status": "ok", "model_id": s.searcher.model_id, "index": str(s.index),
                "faces": store.count(), "labelled_faces": store.count_labelled(),
                "move_roots": [str(r) for r in s.opts.move_roots]}  # where the page may move duplicates


@router.post("/api/query")
def query(image: UploadFile = File(...), top: int = Form(5), tau: float | None = Form(None),
          face: int | None = Form(None), s: Service = Depends(service)) -> dict:
    """``query --json`` for one photo, flattened: that photo's result with the answer's τ and gallery.
    ``face``: the photo is that indexed face's crop (the page's search by face), never its own match."""
    if not 1 <= top <= MAX_TOP:
        raise DataError(f"top must be 1..{MAX_TOP}, got {top}", hint="ask for fewer matches")
    if face is not None and not 0 <= face <= MAX_ID:
        raise DataError(f"no face {face}", hint="give the id of an indexed face")
    _check_tau(tau)
    img = decode_upload(image)
    with s.compute:  # queue here, not inside the CPU: 16 clients at once thrash 2 cores
        answer = s.searcher.search([img], top=top, tau=tau, names=[upload_name(image)], face=face)
    return {**answer["results"][0], **{k: v for k, v in answer.items() if k != "results"}}


def _check_tau(tau: float | None) -> None:
    """The library's rule for a given τ, as a 400 instead of its ValueError."""
    from facesearch.eval.tau import check_tau

    if tau is not None:
        try:
            check_tau(tau)
        except ValueError as e:
            raise DataError(str(e), hint="0 < tau <= 2") from None


@router.get("/api/faces/{face_id}/thumb")
def thumb(face_id: int, size: int = 160, s: Service = Depends(service)) -> Response:
    return Response(thumbnail(s.index, face_id, min(max(size, 16), 512)), media_type="image/jpeg")


@router.get("/api/photos/thumb")
def photo_thumb(path: str, size: int = 240, s: Service = Depends(service)) -> Response:
    """A JPEG of a whole indexed photo (duplicate photos are compared whole); any other path is 404."""
    from facesearch.photos.load import load_image
    from facesearch.report.html import fit

    with FaceIndex.open(s.index, readonly=True) as store:
        known = "\x00" not in path and bool(store.file_info(path))
    if not known:
        raise HTTPException(404, "no such photo in the index")
    return Response(_jpeg(fit(load_image(path), min(max(size, 16), 640))), media_type="image/jpeg")


def _jpeg(img) -> bytes:
    buf = io.BytesIO()
    img.convert("RGB").save(buf, "JPEG", quality=85)
    return buf.getvalue()


def thumbnail(index, face_id: int, size: int) -> bytes:
    """A JPEG crop of an indexed face; nothing that is not a face of the index is ever read."""
    from facesearch.photos.video import still
    from facesearch.report.html import crop_face, fit

    row, moment = _face(index, face_id)
    photo = still(row.path, None if moment is None else moment.time_s)  # a clip's face: its frame then
    return _jpeg(fit(crop_face(photo, row.box), size))


def _face(index, face_id: int):
    """An indexed face's row and its moment (None for a photo's); 404 for anything else."""
    with FaceIndex.open(index, readonly=True) as store:
        try:
            if not 0 <= face_id <= MAX_ID:
                raise KeyError(face_id)
            return store.faces([face_id])[0], store.moments([face_id]).get(face_id)
        except KeyError:
            raise HTTPException(404, f"no face {face_id} in the index") from None


def _as_indexed(row) -> bool:
    """The face's file is still the regular file that was indexed (not a link put in its place, not
    changed since): raw bytes are served from it, so nothing else may answer under its name."""
    try:
        st = os.stat(row.path, follow_symlinks=False)
    except OSError:
        return False
    return stat.S_ISREG(st.st_mode) and (st.st_size, st.st_mtime_ns) == (row.size, row.mtime_ns)


CLIP_TYPES = {".mp4": "video/mp4", ".m4v": "video/mp4", ".mov": "video/quicktime", ".webm": "video/webm",
              ".mkv": "video/x-matroska", ".avi": "video/x-msvideo", ".3gp": "video/3gpp"}


@router.get("/api/faces/{face_id}/clip")
def clip(face_id: int, s: Service = Depends(service)) -> Response:
    """The clip a face was seen in, for the page's ``<video>`` (ranges served, so it seeks to the moment).

    Only a clip's face names a file: no path is taken from the request, and a photo's face is 404.
    """
    from fastapi.responses import FileResponse

    row, moment = _face(s.index, face_id)
    if moment is None or not _as_indexed(row):
        raise HTTPException(404, f"face {face_id} is not in an indexed clip")
    kind = CLIP_TYPES.get(os.path.splitext(row.path)[1].lower(), "video/mp4")  # named by content: mp4 plays most
    return FileResponse(row.path, media_type=kind)
