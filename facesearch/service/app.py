"""``facesearch serve``: the index behind a local HTTP API and a web page (FastAPI, layer 6).

The detector and the model load once (:class:`facesearch.search.query.Searcher`); every request opens
the index read-only, so faces a CLI ``index`` run commits meanwhile are found without a restart.
Answers are the library's own JSON (``POST /api/query`` is ``query --json`` for one photo).

Safety: the CLI binds 127.0.0.1 unless told otherwise, and refuses any other address without
a token; with a token every ``/api`` request must carry it (``Authorization: Bearer``, the
``X-Facesearch-Token`` header, or ``?token=`` for image URLs). Uploads are capped and decoded
with the indexing guards. Thumbnails are served only for faces in the index. Errors are JSON
``{"error", "hint"}`` with the CLI's one-line messages.
"""

from __future__ import annotations

import hmac
import io
import os
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import FastAPI, File, Form, HTTPException, Request, UploadFile
from fastapi.responses import HTMLResponse, JSONResponse, Response

from facesearch.core.errors import BadImageError, DataError, FacesearchError, IndexLockedError, IndexMissingError, NoFaceError
from facesearch.store.face_index import FaceIndex
from facesearch.search.query import Searcher

MAX_UPLOAD = 25 * 1024 * 1024  # bytes: a large phone photo is ~10 MB
MAX_TOP = 100
LOOPBACK = ("127.0.0.1", "localhost", "::1")
COMPUTE_SLOTS = 2


@dataclass
class ServeOptions:
    index: os.PathLike
    weights: str | None = None
    detector: str = "auto"
    device: str = "auto"
    token: str | None = None


def check_bind(host: str, token: str | None) -> None:
    """Refuse to serve beyond this machine without a token."""
    if host not in LOOPBACK and not token:
        raise DataError(f"refusing to listen on {host} without a token: anyone who can reach it could search "
                        "and name faces", hint="pass --token (or set FACESEARCH_TOKEN), or bind 127.0.0.1")


def create_app(opts: ServeOptions, searcher: Searcher | None = None) -> FastAPI:
    """The service for one index (the model loads here, once)."""
    from facesearch.service.page import PAGE

    app = FastAPI(title="facesearch", docs_url=None, redoc_url=None, openapi_url=None)
    state = _State(opts, searcher or Searcher(opts.index, opts.weights, opts.detector, opts.device))
    _guards(app, opts.token)

    @app.get("/", response_class=HTMLResponse)
    def page() -> str:
        return PAGE

    @app.get("/api/health")
    def health() -> dict:
        with FaceIndex.open(opts.index, readonly=True) as store:
            return {"status": "ok", "model_id": state.searcher.model_id, "index": str(opts.index),
                    "faces": store.count(), "labelled_faces": store.count_labelled()}

    @app.post("/api/query")
    def query(image: UploadFile = File(...), top: int = Form(5), tau: float | None = Form(None)) -> dict:
        if not 1 <= top <= MAX_TOP:
            raise DataError(f"top must be 1..{MAX_TOP}, got {top}", hint="ask for fewer matches")
        if tau is not None:
            from facesearch.eval.tau import check_tau

            try:
                check_tau(tau)
            except ValueError as e:
                raise DataError(str(e), hint="0 < tau <= 2") from None
        img = _decode_upload(image)
        with state.compute:  # queue here, not inside the CPU: 16 clients at once thrash 2 cores
            answer = state.searcher.search([img], top=top, tau=tau, names=[image.filename or "upload"])
        return {**answer["results"][0], **{k: v for k, v in answer.items() if k != "results"}}

    @app.get("/api/faces/{face_id}/thumb")
    def thumb(face_id: int, size: int = 160) -> Response:
        return Response(_thumbnail(opts.index, face_id, min(max(size, 16), 512)), media_type="image/jpeg")

    @app.get("/api/people")
    def people() -> dict:
        from facesearch.people.persons import PeopleOptions, people

        return people(PeopleOptions(opts.index))

    @app.post("/api/people/{person}/name")
    async def name(person: int, request: Request) -> dict:
        from facesearch.people.persons import name_person

        body = await request.json()
        if not isinstance(body, dict) or not isinstance(body.get("name"), str):
            raise DataError('send {"name": "…"}', hint="a JSON object with the person's name")
        return name_person(opts.index, person, body["name"])

    @app.get("/api/dedupe")
    def dedupe() -> dict:
        from facesearch.search.dedupe import DedupeOptions, find_duplicates

        return find_duplicates(DedupeOptions(index=opts.index))

    @app.post("/api/index")
    async def index(request: Request) -> dict:
        if request.headers.get("content-type", "").startswith("multipart/"):
            form = await request.form()
            photo, label = form.get("image"), form.get("label")
            if not hasattr(photo, "read"):
                raise DataError("send the photo as the multipart field 'image'", hint="and optionally 'label'")
            saved = _save_upload(Path(opts.index), photo, label if isinstance(label, str) and label else None)
            return state.start_index([str(saved)], label_from_folder=bool(label))
        body = await request.json()
        paths = body.get("paths") if isinstance(body, dict) else None
        if not isinstance(paths, list) or not paths or not all(isinstance(p, str) for p in paths):
            raise DataError('send {"paths": ["/photos/…", …]}, or a multipart photo', hint="paths on the server's disk")
        return state.start_index(paths, bool(body.get("label_from_folder")))

    @app.get("/api/jobs/{job_id}")
    def job(job_id: str) -> dict:
        if job_id not in state.jobs:
            raise HTTPException(404, f"no job {job_id}")
        return state.jobs[job_id].to_dict()

    return app


# --- internals --------------------------------------------------------------------------------


@dataclass
class _Job:
    id: str
    paths: list[str]
    status: str = "running"
    done: int = 0
    total: int | None = None
    summary: dict | None = None
    error: str | None = None
    started: float = field(default_factory=time.time)

    def to_dict(self) -> dict:
        return {"id": self.id, "status": self.status, "done": self.done, "total": self.total,
                "summary": self.summary, "error": self.error, "seconds": round(time.time() - self.started, 1)}


class _State:
    def __init__(self, opts: ServeOptions, searcher: Searcher):
        self.opts, self.searcher = opts, searcher
        self.jobs: dict[str, _Job] = {}
        # Searches at once: torch already spreads one over the cores (bench/serve.py, docs/benchmarks.md).
        self.compute = threading.BoundedSemaphore(COMPUTE_SLOTS)

    def start_index(self, paths: list[str], label_from_folder: bool) -> dict:
        """Index ``paths`` in a background thread (the index's writer lock keeps runs apart)."""
        job = _Job(uuid.uuid4().hex[:12], paths)
        self.jobs[job.id] = job
        threading.Thread(target=self._run, args=(job, label_from_folder), daemon=True).start()
        return job.to_dict()

    def _run(self, job: _Job, label_from_folder: bool) -> None:
        from facesearch.indexing.run import IndexOptions, index_collection

        def progress(event: str, data: dict) -> None:
            if event == "start":
                job.total = data["todo"]
            elif event == "file":
                job.done = data["done"]

        try:
            opts = IndexOptions(paths=job.paths, index=self.opts.index, weights=self.opts.weights,
                                detector=self.opts.detector, device=self.opts.device,
                                label_from_folder=label_from_folder, workers=0)
            job.summary, job.status = index_collection(opts, progress).to_dict(), "done"
        except FacesearchError as e:
            job.status, job.error = "failed", e.message
        except Exception as e:  # a bug: the job says so instead of dying silently in its thread
            job.status, job.error = "failed", f"unexpected {type(e).__name__}: {e}"


def _guards(app: FastAPI, token: str | None) -> None:
    """The token check on /api, and every library error as one-line JSON."""

    @app.middleware("http")
    async def require_token(request: Request, call_next):
        if token and request.url.path.startswith("/api") and not _has_token(request, token):
            return JSONResponse({"error": "missing or wrong token", "hint": "send Authorization: Bearer TOKEN"},
                                status_code=401)
        return await call_next(request)

    @app.exception_handler(FacesearchError)
    async def library_error(request: Request, e: FacesearchError):
        return JSONResponse({"error": e.message, "hint": e.hint}, status_code=_status(e))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, e: HTTPException):
        return JSONResponse({"error": str(e.detail), "hint": None}, status_code=e.status_code)


def _has_token(request: Request, token: str) -> bool:
    auth = request.headers.get("authorization", "")
    given = (auth[7:] if auth.lower().startswith("bearer ") else None) or request.headers.get("x-facesearch-token") \
        or request.query_params.get("token") or ""
    return hmac.compare_digest(given.encode(), token.encode())


def _status(e: FacesearchError) -> int:
    if isinstance(e, IndexMissingError):
        return 404
    if isinstance(e, IndexLockedError):
        return 409
    if isinstance(e, (BadImageError, NoFaceError, DataError)):
        return 400
    return 500


def _read_upload(upload) -> bytes:
    """The upload's bytes, refused past the size cap before any decoding."""
    data = upload.file.read(MAX_UPLOAD + 1)
    if len(data) > MAX_UPLOAD:
        raise HTTPException(413, f"upload larger than {MAX_UPLOAD // 2**20} MB")
    return data


def _load_as(path: Path, name: str):
    """Decode ``path`` with the indexing guards; errors name the photo as it was sent."""
    from facesearch.photos.load import load_array

    try:
        return load_array(path)
    except BadImageError as e:
        raise BadImageError(e.message.replace(str(path), name), hint=e.hint) from None


def _decode_upload(upload: UploadFile):
    """The uploaded photo as an RGB array."""
    with tempfile.TemporaryDirectory(prefix="facesearch-upload-") as tmp:
        path = Path(tmp) / "upload"
        path.write_bytes(_read_upload(upload))
        return _load_as(path, upload.filename or "upload")


UPLOADS = "uploads"  # inside the index folder: photos sent to /api/index live beside the index they are in


def _save_upload(index: Path, upload, label: str | None) -> Path:
    """Keep an uploaded photo under ``<index>/uploads/[<label>/]``, written atomically, only if it decodes."""
    from facesearch.core.atomic import atomic_path
    from facesearch.photos.scan import IMAGE_EXTS

    if label is not None and (not 0 < len(label) <= 100 or label in (".", "..") or any(c in label for c in "/\\\0")
                              or label != label.strip()):
        raise DataError(f"{label!r} cannot be a label here", hint="1-100 characters, no slashes")
    data = _read_upload(upload)
    folder = index / UPLOADS / (label or "")
    folder.mkdir(parents=True, exist_ok=True)
    suffix = Path(upload.filename or "").suffix.lower()
    dest = folder / f"{uuid.uuid4().hex[:12]}{suffix if suffix in IMAGE_EXTS else '.jpg'}"  # never the user's name
    with atomic_path(dest) as tmp:
        Path(tmp).write_bytes(data)
        _load_as(Path(tmp), upload.filename or "upload")  # a bad photo is refused now, not found bad by the job
    return dest


def _thumbnail(index: os.PathLike, face_id: int, size: int) -> bytes:
    """A JPEG crop of an indexed face; nothing that is not a face of the index is ever read."""
    from facesearch.report.html import crop_face, fit

    with FaceIndex.open(index, readonly=True) as store:
        try:
            row = store.faces([face_id])[0]
        except KeyError:
            raise HTTPException(404, f"no face {face_id} in the index") from None
    from facesearch.photos.load import load_image

    img = fit(crop_face(load_image(row.path), row.box), size)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=85)
    return buf.getvalue()
