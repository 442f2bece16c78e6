"""/endpoints: the LLM endpoints the operator offers this caller (names and models only)."""
from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, Field

from evoforge.api.deps import Auth, State
from evoforge.api.errors import E401
from evoforge.api.schemas import ErrorPublic
from evoforge.api.services import llm_access

router = APIRouter(tags=["system"], responses=E401)


class EndpointPublic(BaseModel):
    name: str
    models: list[str] = Field(description='Model names allowed on it; "*": any.')


class EndpointsPublic(BaseModel):
    endpoints: list[EndpointPublic]
    caller_urls: bool = Field(description="Whether this project may give its own mutator.base_url "
                                          "(it never gets the server's key).")


@router.get("/endpoints", response_model=EndpointsPublic,
            responses={503: {"model": ErrorPublic, "description": "Endpoint file broken."}})
def list_endpoints(state: State, who: Auth):
    """The LLM endpoints a campaign may name in `mutator.endpoint`: the operator declares them
    (URL, key and prices stay on the server)."""
    return llm_access.listing(state.sessions, who)
