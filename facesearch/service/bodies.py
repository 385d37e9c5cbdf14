"""Request bodies of the service: JSON objects and uploaded photos, checked before any use.

Every refusal is a :class:`~facesearch.core.errors.FacesearchError` (or a 413/415 ``HTTPException``),
which the service answers as ``{"error", "hint"}`` JSON with a 4xx code, never a traceback.
"""

from __future__ import annotations

import json
import re
import tempfile
import uuid
from pathlib import Path

from fastapi import HTTPException, Request

from facesearch.core.errors import BadImageError, DataError
from facesearch.core.names import check_name

MAX_UPLOAD = 25 * 1024 * 1024  # bytes: a large phone photo is ~10 MB
MAX_JSON = 1024 * 1024  # bytes: a list of folders, a name
MAX_DEPTH = 32  # JSON nesting: our bodies are 3 deep; json.loads recurses, and 100k levels is a RecursionError
MAX_ID = 2**63 - 1  # SQLite's integers: a larger face/person id names nothing (and would overflow SQLite)
UPLOADS = "uploads"  # inside the index folder: photos sent to /api/index live beside the index they are in


def media_type(request: Request) -> str:
    """The request's ``Content-Type`` without parameters, lower case (``""`` when absent)."""
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


async def json_object(request: Request, example: str) -> dict:
    """The body as a JSON object: 415 unless sent as ``application/json``, 400 unless it parses to an object."""
    if media_type(request) != "application/json":
        raise HTTPException(415, f"send {example} as application/json")
    raw = b""
    async for chunk in request.stream():  # counted as it comes: a huge body is refused, not held
        raw += chunk
        if len(raw) > MAX_JSON:
            raise HTTPException(413, f"a JSON body larger than {MAX_JSON // 2**20} MB")
    if json_depth(raw) > MAX_DEPTH:
        raise DataError(f"the JSON body is nested more than {MAX_DEPTH} levels deep", hint=f"send {example}")
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:  # JSONDecodeError is a ValueError
        raise DataError(f"the body is not valid JSON ({e})", hint=f"send {example}") from None
    if not isinstance(body, dict):
        raise DataError("the body is JSON but not an object", hint=f"send {example}")
    return body


_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)  # a JSON string: brackets inside it do not nest


def json_depth(raw: bytes) -> int:
    """How deep ``raw``'s arrays and objects nest, counted without recursion (so before ``json.loads``)."""
    depth = deepest = 0
    for c in _STRING.sub(b"", raw).translate(None, delete=_NOT_BRACKETS):
        depth += 1 if c in b"[{" else -1
        deepest = max(deepest, depth)
    return deepest


_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def upload_name(upload) -> str:
    """The name a photo was sent with, under the rule for names (shown in answers and errors only)."""
    return check_name(upload.filename, "file name") if upload.filename else "upload"


def read_upload(upload) -> bytes:
    """The upload's bytes, refused past the size cap before any decoding."""
    data = upload.file.read(MAX_UPLOAD + 1)
    if len(data) > MAX_UPLOAD:
        raise HTTPException(413, f"upload larger than {MAX_UPLOAD // 2**20} MB")
    return data


def decode_upload(upload):
    """The uploaded photo as an RGB array."""
    name = upload_name(upload)
    with tempfile.TemporaryDirectory(prefix="facesearch-upload-") as tmp:
        path = Path(tmp) / "upload"
        path.write_bytes(read_upload(upload))
        return _load_as(path, name)


def save_upload(index: Path, upload, label: str | None) -> Path:
    """Keep an uploaded photo under ``<index>/uploads/[<label>/]``, written atomically, only if it decodes."""
    from facesearch.core.atomic import atomic_path
    from facesearch.photos.scan import IMAGE_EXTS

    name = upload_name(upload)
    folder = index / UPLOADS / (folder_label(label) if label is not None else "")
    data = read_upload(upload)
    folder.mkdir(parents=True, exist_ok=True)
    suffix = Path(name).suffix.lower()
    dest = folder / f"{uuid.uuid4().hex[:12]}{suffix if suffix in IMAGE_EXTS else '.jpg'}"  # never the user's name
    with atomic_path(dest) as tmp:
        Path(tmp).write_bytes(data)
        _load_as(Path(tmp), name)  # a bad photo is refused now, not found bad by the job
    return dest


def folder_label(label: str) -> str:
    """A label that is also one folder name (``--label-from-folder`` reads it back): a name, and no path."""
    label = check_name(label, "label")
    if label in (".", "..") or any(c in label for c in "/\\") or len(label.encode()) > 255:
        raise DataError(f"{label!r} cannot be a label here", hint="no slashes, and not '.' or '..'")
    return label


def _load_as(path: Path, name: str):
    """Decode ``path`` with the indexing guards; errors name the photo as it was sent."""
    from facesearch.photos.load import load_array

    try:
        return load_array(path)
    except BadImageError as e:
        raise BadImageError(e.message.replace(str(path), name), hint=e.hint) from None
