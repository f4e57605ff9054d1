"""REST API for typed custom attributes: their definitions (admins) and a contact's values."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import BaseModel, Field
from sqlalchemy import select

from scrm import events as ev
from scrm.db.models import Contact
from scrm.db.models_marketing import AttributeDefinition
from scrm.services.agents import audit
from scrm.services.agents.accounts import Principal
from scrm.services.contacts import attributes as attr_svc
from scrm.services.contacts import definitions
from scrm.services.contacts.attributes import AttributeError_
from scrm.services.uow import unit_of_work
from scrm.web.access import require_contact
from scrm.web.keys import CTX
from scrm.web.routing import ADMIN, ALL_ROLES, ApiError, api, ok, path_int


class DefinitionIn(BaseModel):
    key: str = Field(min_length=1, max_length=64)
    label: str = Field(min_length=1, max_length=120)
    type: str
    choices: list[str] = Field(default_factory=list, max_length=200)


def _definition_json(d: AttributeDefinition) -> dict[str, Any]:
    return {"id": d.id, "key": d.key, "label": d.label, "type": d.type, "choices": d.choices}


@api("GET", "/attribute-definitions", roles=ALL_ROLES, tag="contacts", summary="Custom contact attribute definitions")
async def list_definitions(request: web.Request, principal: Principal) -> web.Response:
    async with request.app[CTX].db.session() as s:
        rows = (await s.scalars(select(AttributeDefinition).order_by(AttributeDefinition.key))).all()
    return ok({"definitions": [_definition_json(d) for d in rows]})


@api("POST", "/attribute-definitions", roles=ADMIN, body=DefinitionIn, tag="contacts",
     summary="Define a typed attribute (text, number, date, choice)")
async def create_definition(request: web.Request, principal: Principal, body: DefinitionIn) -> web.Response:
    try:
        async with unit_of_work(request.app[CTX]) as tx:
            d = await definitions.define(tx, principal.agent_id, body.key, body.label, body.type, body.choices)
            return ok(_definition_json(d), 201)
    except definitions.DefinitionExists as exc:
        raise ApiError(409, str(exc), "exists") from None
    except AttributeError_ as exc:
        raise ApiError(400, str(exc), "bad_definition") from None


class DefinitionPatch(BaseModel):
    label: str | None = Field(None, min_length=1, max_length=120)
    choices: list[str] | None = None


@api("PATCH", "/attribute-definitions/{id}", roles=ADMIN, body=DefinitionPatch, tag="contacts",
     summary="Rename an attribute or change its choices (the type cannot change)")
async def update_definition(request: web.Request, principal: Principal, body: DefinitionPatch) -> web.Response:
    try:
        async with unit_of_work(request.app[CTX]) as tx:
            d = await definitions.update(tx, principal.agent_id, path_int(request, "id"), body.label, body.choices)
            if d is None:
                raise ApiError(404, "attribute not found", "not_found")
            return ok(_definition_json(d))
    except AttributeError_ as exc:
        raise ApiError(400, str(exc), "bad_definition") from None


@api("DELETE", "/attribute-definitions/{id}", roles=ADMIN, tag="contacts",
     summary="Delete a definition (stored values stay on contacts)")
async def delete_definition(request: web.Request, principal: Principal) -> web.Response:
    async with unit_of_work(request.app[CTX]) as tx:
        if not await definitions.delete(tx, principal.agent_id, path_int(request, "id")):
            raise ApiError(404, "attribute not found", "not_found")
    return ok({"deleted": True})


class AttributesIn(BaseModel):
    attributes: dict[str, Any]


@api("PUT", "/contacts/{id}/attributes", roles=ALL_ROLES, body=AttributesIn, tag="contacts",
     summary="Set typed attributes (validated; null removes); the change is on the contact's timeline")
async def set_attributes(request: web.Request, principal: Principal, body: AttributesIn) -> web.Response:
    cid = path_int(request, "id")
    await require_contact(request, principal, cid)
    async with unit_of_work(request.app[CTX]) as tx:
        contact = await tx.session.get(Contact, cid, with_for_update=True)
        if contact is None or contact.merged_into_id:
            raise ApiError(404, "contact not found", "not_found")
        try:
            changes = await attr_svc.set_values(tx.session, contact, body.attributes)
        except AttributeError_ as exc:
            raise ApiError(400, str(exc), "bad_attribute") from None
        attrs = contact.attributes
        if changes:
            audit.record(tx, principal.agent_id, "contact.attributes", "contact", cid, changes=changes)
            tx.emit(ev.CONTACT_UPDATED, contact_id=cid)
        return ok({"id": cid, "attributes": attrs, "changes": changes})

