"""Routes about who is who: people, naming one, duplicate groups."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from facesearch.core.errors import DataError
from facesearch.service.bodies import MAX_ID, json_object
from facesearch.service.state import Service, service

router = APIRouter()


@router.get("/api/people")
def people(s: Service = Depends(service)) -> dict:
    from facesearch.people.persons import PeopleOptions, people

    return people(PeopleOptions(s.index))


@router.post("/api/people/{person}/name")
async def name(person: int, request: Request, s: Service = Depends(service)) -> dict:
    """``{"name": …}`` names the person (the rule for names is the library's: ``core/names.py``)."""
    from facesearch.people.persons import name_person

    body = await json_object(request, '{"name": "…"}')
    if not isinstance(body.get("name"), str):
        raise DataError('send {"name": "…"}', hint="a JSON object with the person's name")
    if not 0 <= person <= MAX_ID:
        raise DataError(f"no person {person} in this index", hint="`facesearch people` lists them")
    return name_person(s.index, person, body["name"])


@router.get("/api/dedupe")
def dedupe(s: Service = Depends(service)) -> dict:
    from facesearch.search.dedupe import DedupeOptions, find_duplicates

    return find_duplicates(DedupeOptions(index=s.index))
