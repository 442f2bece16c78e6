"""Documented error responses shared by the routers."""
from evoforge.api.schemas import ErrorPublic

E401 = {401: {"model": ErrorPublic, "description": "No, malformed or invalid API key "
                                                   "(with a `WWW-Authenticate: Bearer` header)."}}
