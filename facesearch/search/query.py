"""One-shot, open-set identification: every face in a query photo against the indexed faces.

A face is named after the nearest *labelled* face when that distance is within
the identification τ; otherwise it is ``unknown``. That τ comes from the τ policy
the index recorded at creation (:mod:`facesearch.eval.tau`): it is set for a
target false-positive identification rate (1 % of strangers named) over the
number of labelled faces, so it tightens as the gallery grows. Each face also
gets the FAR at its distance (how often two different people are that close),
the margin to the best *other* identity, and the hits that are likely the same
person (labelled or not), judged the same way over every indexed face.

A face the model rates below the policy's quality gate (near-black, in profile,
blurred: :meth:`facesearch.eval.tau.TauPolicy.can_name`) is not named and gets no
"same person" hits, whatever its distances: no τ keeps strangers unnamed among
faces the model cannot read. Its candidate and matches are still reported.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace

import numpy as np

from facesearch.faces.detect import create_detector
from facesearch.core.errors import BadImageError, NoFaceError
from facesearch.eval.tau import GIVEN, TauPolicy, tau_or_policy
from facesearch.faces.chips import extract_faces
from facesearch.photos.load import load_array
from facesearch.store.face_index import FaceIndex
from facesearch.store.labels import OLD_NAMES_WARNING, needs_repair
from facesearch.models.config import EmbedderConfig
from facesearch.models.weights_meta import resolve_weights
from facesearch.search.moments import moment_fields, one_per_track
from facesearch.search.own import own_photo
from facesearch.search.verdict import add_verdicts

IDENTIFY_K = 50  # neighbours scanned for the nearest labelled faces


@dataclass
class QueryOptions:
    index: os.PathLike
    weights: str | None = None
    top: int = 5
    tau: float | None = None
    detector: str = "auto"
    device: str = "auto"
    quality_gate: bool = True  # False: name faces whatever the model's rating of them


@dataclass
class Thresholds:
    """The τ a query names people with, the τ it groups "same person" hits with, and why."""

    name: float
    same: float
    source: str
    warning: str | None = None


def query_thresholds(policy: TauPolicy, tau: float | None, n_labelled: int, n_faces: int) -> Thresholds:
    """A given ``tau`` for both (validated, with a warning when looser than verification), else the
    policy's identification τ over the labelled faces (naming) and over all faces (grouping)."""
    name, source = tau_or_policy(tau, lambda: policy.identification(n_labelled))
    if source == GIVEN:
        return Thresholds(name, name, source, policy.looseness_warning(name))
    return Thresholds(name, policy.identification(n_faces)[0], source)


def query(images: list[str], opts: QueryOptions) -> dict:
    """Search the index for every face in each image.

    Returns ``{"results": [one per image], "tau": …, "tau_same": …, "tau_source": …,
    "gallery": {"labelled_faces", "faces"}, "warnings": [...]}``, JSON-ready.
    """
    searcher = Searcher(opts.index, opts.weights, opts.detector, opts.device, opts.quality_gate)
    return searcher.search(images, top=opts.top, tau=opts.tau)


class Searcher:
    """An index's model, detector and τ policy, loaded once (a service keeps one for its life).

    Each search opens the index anew (read-only), so faces an ``index`` run commits meanwhile are
    searched too.
    """

    def __init__(self, index: os.PathLike, weights: str | None = None, detector: str = "auto",
                 device: str = "auto", quality_gate: bool = True):
        from facesearch.models.embed import open_engine  # the runtime (or torch) loads only for commands that embed

        self.index = index
        with FaceIndex.open(index, readonly=True) as store:
            manifest = store.manifest
            self.engine = open_engine(resolve_weights(weights, model=manifest["model_id"]),
                                      expect=EmbedderConfig.from_dict(manifest["model_config"]), device=device)
            store.check_model(self.engine.model_id)
        self.model_id = self.engine.model_id
        self.policy = TauPolicy.from_config(manifest["model_config"])
        if not quality_gate:
            self.policy = replace(self.policy, quality_min=None)
        self.detector = create_detector(detector, align=self.engine.config.align)

    def search(self, images: list, top: int = 5, tau: float | None = None, names: list[str] | None = None,
               face: int | None = None) -> dict:
        """Like :func:`query`; ``images`` are paths or decoded arrays (then ``names`` label them).

        ``face``: the images are that indexed face (the service's search by face id), so neither it nor
        the rest of its photo is a match. An image given by path is never its own match either.
        """
        with FaceIndex.open(self.index, readonly=True) as store:
            n_labelled, n_faces = store.count_labelled(), store.count()
            th = query_thresholds(self.policy, tau, n_labelled, n_faces)
            ctx = _Query(store, self.engine, self.detector, th, self.policy, top,
                         k=min(max(top, IDENTIFY_K), max(n_faces, 1)), n_faces=n_faces, face=face)
            names = names or [str(p) for p in images]
            results = [_query_safe(im, name, ctx, single=len(images) == 1) for im, name in zip(images, names)]
            with store.read_transaction() as db:  # read-only here: say so rather than name by the old rule
                if needs_repair(db):
                    ctx.notes.append(OLD_NAMES_WARNING)
        answer = {"results": results, "tau": round(th.name, 4), "tau_same": round(th.same, 4), "tau_source": th.source,
                  "gallery": {"labelled_faces": n_labelled, "faces": n_faces}, "quality_min": self.policy.quality_min,
                  "warnings": ([th.warning] if th.warning else []) + ctx.notes}
        return add_verdicts(answer, self.policy)  # the answer in words too (verdict.py), numbers unchanged


@dataclass
class _Query:
    """What every image of one query shares."""

    store: FaceIndex
    engine: object
    detector: object
    th: Thresholds
    policy: TauPolicy
    top: int
    k: int  # neighbours searched per face
    n_faces: int = 0
    face: int | None = None  # the indexed face the images are (a search by face id)
    notes: list = field(default_factory=list)  # images read as face crops (faces.crop), for the warnings


def _query_safe(image, name: str, q: _Query, single: bool) -> dict:
    """One image's result; with several images a bad one is reported in place, not fatal."""
    try:
        return _query_one(image, name, q)
    except (BadImageError, NoFaceError) as e:
        if single:
            raise
        return {"query": name, "faces": [], "error": e.message}


def _query_one(image, path: str, q: _Query) -> dict:
    img = image if isinstance(image, np.ndarray) else load_array(image)
    crops = extract_faces(img, q.detector, q.engine.config.align)
    if not crops:
        raise NoFaceError(f"no face found in {path}",
                          hint="the whole image did not pass as a face crop either; --detector none reads it as one")
    if any(c.face.whole_image for c in crops):
        q.notes.append(f"{path}: no face detected; read the whole image as a face crop (checked, see --detector none)")
    emb, quality = q.engine.embed_with_quality([c.chip for c in crops])
    own = own_photo(q.store, None if isinstance(image, np.ndarray) else image, q.face)
    # Each face may find its photo's own faces first: search that many more, then drop them.
    found = q.store.search(emb, min(q.k + len(crops), max(q.n_faces, 1)))
    moments = q.store.moments([m.face_id for ms in found for m in ms])
    faces = []
    # A clip's appearance is one hit: its nearest face, with the track's start and end (search.moments).
    kept = [one_per_track([m for m in ms if not own(m)], moments) for ms in found]
    for k, (crop, matches) in enumerate(zip(crops, kept)):
        rating = None if quality is None else float(quality[k])
        readable = q.policy.can_name(rating)
        answer = identify(matches, q.th.name if readable else -1.0)
        nearest = answer["distance"] if answer["distance"] is not None else (matches[0].distance if matches else None)
        faces.append({
            "box": [round(float(v), 1) for v in crop.face.box],
            "score": round(float(crop.face.score), 4),
            **answer,
            "quality": None if rating is None else round(rating, 2),
            "quality_ok": readable,
            "far": _far(q.policy, nearest),
            # Closer than calibration could measure: "far" is then an upper bound.
            "far_is_bound": nearest is not None and q.policy.below_curve(nearest),
            "same_person": [m.path for m in matches if m.distance <= q.th.same][:q.top] if readable else [],
            "matches": [_match_dict(m, moments.get(m.face_id)) for m in matches[:q.top]],
        })
    return {"query": path, "faces": faces}


def identify(matches, tau: float) -> dict:
    """Open-set answer from nearest-first matches: the nearest labelled face's label if within ``tau``.

    ``distance`` is to the nearest labelled face (None without labelled hits), ``margin``
    how much farther the best *other* identity is (None without one), ``candidate`` the
    nearest identity whether or not it was within τ.
    """
    best: dict[str, float] = {}
    for m in matches:
        if m.label is not None and m.label not in best:
            best[m.label] = m.distance
    if not best:
        return {"identity": None, "candidate": None, "distance": None, "margin": None}
    ranked = sorted(best.items(), key=lambda kv: kv[1])
    label, d = ranked[0]
    margin = round(ranked[1][1] - d, 4) if len(ranked) > 1 else None
    return {"identity": label if d <= tau else None, "candidate": label, "distance": round(float(d), 4),
            "margin": margin}


def _far(policy: TauPolicy, d: float | None) -> float | None:
    far = policy.far_at(d) if d is not None else None
    return None if far is None else float(f"{far:.2g}")


def _match_dict(m, moment=None) -> dict:
    return {
        "path": m.path, "box": [round(float(v), 1) for v in m.box],
        "distance": round(float(m.distance), 4), "similarity": round(float(m.similarity), 4),
        "label": m.label, "face_id": int(m.face_id), **moment_fields(moment),
    }
