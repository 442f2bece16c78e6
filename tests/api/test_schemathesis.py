"""Schemathesis over the app's own OpenAPI schema: no input makes a 5xx, and every response
conforms to the schema (status codes, content types, bodies, headers). In-process ASGI, with an
API key (requests generated without one must be refused), campaigns stored but not run
(execution is covered by the live-server tests)."""
from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

schemathesis = pytest.importorskip("schemathesis")
from schemathesis import checks  # noqa: E402
from schemathesis.core.parameters import ParameterLocation  # noqa: E402

from evoforge.api.app import create_app  # noqa: E402
from evoforge.db.apikeys import create_key  # noqa: E402
from evoforge.db.engine import session_factory, upgrade  # noqa: E402

_DIR = Path(tempfile.mkdtemp(prefix="evoforge-schemathesis-"))
atexit.register(shutil.rmtree, _DIR, ignore_errors=True)  # built at import, so not a fixture
DB_URL = f"sqlite:///{_DIR / 'st.db'}"
upgrade(DB_URL)
APP = create_app(DB_URL, broker_url="", execute=False,
                 allowed_hosts=["testserver"])   # the in-process client's Host (api/guards.py)
KEY, PROJECT_ID = create_key(session_factory(DB_URL), "schemathesis")


def _seed_rows() -> None:
    """A few campaigns and programs, so generated small ids sometimes hit real rows."""
    from evoforge.db.blobs import put_code
    from evoforge.db.models import Evaluation, Program
    from evoforge.worker.campaign_service import create_campaign
    from evoforge.db.campaign_config import CampaignSpec

    sessions = session_factory(DB_URL)
    for seed in range(3):
        c = create_campaign(sessions, CampaignSpec(task="circle_packing", seed=seed,
                                                   budget={"max_evaluations": 10}),
                            project_id=PROJECT_ID)
        with sessions.begin() as s:
            p0 = Program(campaign_id=c.id, iteration=0, code_hash=put_code(s, "x = 1\n"), status="ok", score=1.0, kind="seed")
            s.add(p0)
            s.flush()
            p1 = Program(campaign_id=c.id, iteration=1, parent_id=p0.id, code_hash=put_code(s, "x = 2\n"), status="error",
                         kind="local")
            s.add(p1)
            s.flush()
            s.add(Evaluation(program_id=p1.id, task_key=c.task_key, status="error",
                             artifacts={"stderr": "boom"}))


_seed_rows()
# A negative body may be refused for its size before it is validated: a `code` past its maxLength
# of 1,000,000 characters is, as sent, over the 4 MiB body limit, and the edge guard answers 413
# (documented on every operation that takes a body). That is a refusal, so 413 joins
# schemathesis's default list of statuses that count as rejecting schema-violating data.
REJECTIONS = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429", "5xx"]
CONFIG = schemathesis.Config.from_dict(
    {"checks": {"negative_data_rejection": {"expected-statuses": REJECTIONS}}})
schema = (schemathesis.openapi.from_asgi("/openapi.json", APP, config=CONFIG)
          .exclude(path_regex=r"/events$"))            # an endless stream by design; tested live

CHECKS = [checks.not_a_server_error, checks.status_code_conformance,
          checks.content_type_conformance, checks.response_schema_conformance,
          checks.response_headers_conformance, checks.negative_data_rejection]


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_conforms(case):
    # Cases get the key, except those whose headers were generated invalid on purpose: adding the
    # key to one made invalid by a missing Authorization header would make it valid while
    # schemathesis still expects it refused. Negative bodies and queries still carry the key, so
    # they reach validation rather than stopping at 401.
    header_info = case.meta.components.get(ParameterLocation.HEADER) if case.meta else None
    bad_headers = header_info is not None and header_info.mode.name.lower() == "negative"
    headers = {} if bad_headers or "Authorization" in (case.headers or {}) else {
        "Authorization": f"Bearer {KEY}"}
    case.call_and_validate(checks=CHECKS, headers=headers)
