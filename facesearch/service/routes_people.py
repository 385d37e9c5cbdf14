"""Routes about who is who: people, one person's photos, and the user's corrections.

Every correction is the library call the CLI's ``facesearch people …`` makes
(:mod:`facesearch.people.persons`): the same writer lock, the same sticky decisions (pinned faces,
"not this person"), the same labels, so a query answers with the new name at once.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from facesearch.core.errors import DataError, NotFoundError
from facesearch.service.bodies import MAX_ID, json_object
from facesearch.service.state import Service, service

router = APIRouter()
MAX_FACES = 10_000  # face ids in one request: a person's worth, not a dump


@router.get("/api/people")
def people(s: Service = Depends(service)) -> dict:
    from facesearch.people.persons import PeopleOptions, people

    return people(PeopleOptions(s.index))


@router.get("/api/people/{person}")
def person(person: int, s: Service = Depends(service)) -> dict:
    """One person with every face, and the photos they are in (``/#person=ID`` on the page)."""
    from facesearch.people.persons import PeopleOptions, people

    for p in people(PeopleOptions(s.index))["people"]:
        if p["id"] == person:
            return {**p, "photos": sorted({f["path"] for f in p["faces"]})}
    raise NotFoundError(f"no person {person} in this index", hint="GET /api/people lists them")


@router.post("/api/people/{person}/name")
async def name(person: int, request: Request, s: Service = Depends(service)) -> dict:
    """``{"name": …}`` names the person (the rule for names is the library's: ``core/names.py``)."""
    from facesearch.people.persons import name_person

    body = await json_object(request, '{"name": "…"}')
    if not isinstance(body.get("name"), str):
        raise DataError('send {"name": "…"}', hint="a JSON object with the person's name")
    return name_person(s.index, _id(person, "person"), body["name"])


@router.post("/api/people/{person}/merge")
async def merge(person: int, request: Request, s: Service = Depends(service)) -> dict:
    """``{"other": ID}``: every face of ``other`` joins ``person`` (``people merge PERSON OTHER``)."""
    from facesearch.people.persons import merge_people

    body = await json_object(request, '{"other": PERSON_ID}')
    return merge_people(s.index, _id(person, "person"), _id(body.get("other"), "person"))


@router.post("/api/people/{person}/split")
async def split(person: int, request: Request, s: Service = Depends(service)) -> dict:
    """``{"faces": [ID, …]}``: those faces become a new person, kept apart (``people split``)."""
    from facesearch.people.persons import split_person

    body = await json_object(request, '{"faces": [FACE_ID, …]}')
    return split_person(s.index, _id(person, "person"), _ids(body.get("faces")))


@router.post("/api/people/{person}/assign")
async def assign(person: int, request: Request, s: Service = Depends(service)) -> dict:
    """``{"faces": [ID, …]}``: sort faces (unassigned ones) into the person (``people assign``)."""
    from facesearch.people.persons import assign_faces

    body = await json_object(request, '{"faces": [FACE_ID, …]}')
    return assign_faces(s.index, _id(person, "person"), _ids(body.get("faces")))


@router.post("/api/faces/{face_id}/not-person")
async def not_person(face_id: int, request: Request, s: Service = Depends(service)) -> dict:
    """``{}``: "not this person", the face leaves its person for good (``people remove-face``)."""
    from facesearch.people.persons import remove_face

    await json_object(request, "{}")
    return remove_face(s.index, _id(face_id, "face"))


def _id(value, what: str) -> int:
    """A person or face id as sent: an integer (a bool is not one); one SQLite cannot hold names nothing (404)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise DataError(f"a {what} id is an integer, got {type(value).__name__}",
                        hint=f"send a {what} id from GET /api/people")
    if not 0 <= value <= MAX_ID:
        raise NotFoundError(f"no {what} {value} in this index", hint=f"GET /api/people lists the {what} ids")
    return value


def _ids(values) -> list[int]:
    if not isinstance(values, list) or not values or len(values) > MAX_FACES:
        raise DataError(f"send a list of 1..{MAX_FACES} face ids", hint='{"faces": [FACE_ID, …]}')
    return [_id(v, "face") for v in values]
