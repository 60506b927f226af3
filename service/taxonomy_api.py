"""Taxonomy routes: the effective taxonomy of the caller's tenant, and the tenant's overrides."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

import tagging

from . import crud
from .api import PrincipalDep, SessionDep
from .errors import Unprocessable

router = APIRouter(tags=["taxonomy"])


class TermOut(BaseModel):
    term: str
    type: str = Field(description="synonym | colloquial | asr_variant | phrase")


class CodeOut(BaseModel):
    code: str
    label: str
    label_en: str
    terms: list[TermOut]
    patterns: list[str]


class FamilyOut(BaseModel):
    label: str
    codes: list[CodeOut]


class TaxonomyOut(BaseModel):
    version: str = Field(description="the base version, plus `+<tenant>.r<revision>` when the tenant has overrides")
    tagger_version: str = Field(description="the tagger version that tags new recordings")
    families: dict[str, FamilyOut]


class NewCode(BaseModel):
    kind: Literal["project", "concern", "intent"]
    code: str = Field(pattern=r"^[a-z][a-z0-9_]*$", max_length=64)
    label: str = Field(min_length=1, max_length=100)
    label_en: str | None = Field(None, max_length=100)
    synonyms: list[str] = Field(default_factory=list, max_length=500)
    colloquial: list[str] = Field(default_factory=list, max_length=500)
    phrases: list[str] = Field(default_factory=list, max_length=500)
    patterns: list[str] = Field(default_factory=list, max_length=100)


class Overrides(BaseModel):
    synonyms: dict[str, list[str]] = Field(
        default_factory=dict, description='more terms for existing codes: {"project.thermage": ["热玛吉Pro"]}'
    )
    disabled: list[str] = Field(default_factory=list, description='codes this tenant does not use: ["intent.referral"]')
    codes: list[NewCode] = Field(default_factory=list, description="the tenant's own codes")


class OverridesOut(Overrides):
    revision: int
    taxonomy_version: str


@router.get("/v1/taxonomy", response_model=TaxonomyOut)
def get_taxonomy(request: Request, principal: PrincipalDep, session: SessionDep) -> TaxonomyOut:
    """Every family and code with its labels and terms, as this tenant's tagger sees them."""
    principal.require("taxonomy:read")
    pipeline = request.app.state.pipeline
    taxonomy, _ = pipeline.tenant_taxonomy(session, principal.tenant_id)
    return TaxonomyOut(tagger_version=pipeline.tagger_version(), **taxonomy.to_dict())


@router.get("/v1/taxonomy/overrides", response_model=OverridesOut)
def get_overrides(request: Request, principal: PrincipalDep, session: SessionDep) -> OverridesOut:
    """The tenant's overrides (empty when it has none)."""
    principal.require("taxonomy:read")
    taxonomy, revision = request.app.state.pipeline.tenant_taxonomy(session, principal.tenant_id)
    row = crud.get_taxonomy_override(session, tenant_id=principal.tenant_id)
    return OverridesOut(revision=revision, taxonomy_version=taxonomy.version, **((row.data if row else None) or {}))


@router.put("/v1/taxonomy/overrides", response_model=OverridesOut)
def put_overrides(body: Overrides, request: Request, principal: PrincipalDep, session: SessionDep) -> OverridesOut:
    """Replace the tenant's overrides. Recordings tagged from now on use them; codes stay stable.

    A code that does not exist, a clash with an existing code or an invalid pattern → 422.
    """
    principal.require("taxonomy:write")
    pipeline = request.app.state.pipeline
    data = body.model_dump(exclude_none=True)
    try:
        taxonomy = pipeline.taxonomy.with_overrides(data, label=f"{principal.tenant_id}.new")
    except tagging.TaxonomyError as exc:
        raise Unprocessable(str(exc), type="/problems/invalid-taxonomy-override") from exc
    row = crud.put_taxonomy_override(session, tenant_id=principal.tenant_id, data=data, key_id=principal.key_id)
    session.commit()
    version = taxonomy.version.replace(f"{principal.tenant_id}.new", f"{principal.tenant_id}.r{row.revision}")
    return OverridesOut(revision=row.revision, taxonomy_version=version, **data)
