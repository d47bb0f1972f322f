"""Schemathesis against the service's own OpenAPI schema: generated requests (valid and not) to
every operation, with the token, must never get a 5xx. In process (ASGI), no worker processes:
queued jobs are stored, not run."""

from __future__ import annotations

from pathlib import Path

import pytest

schemathesis = pytest.importorskip("schemathesis")

from hypothesis import HealthCheck, settings  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.python.asgi import shutdown_lifespans  # noqa: E402
from test_api_support import TOKEN, auth, isolated_mlflow  # noqa: E402

from l2l_api.app import create_app  # noqa: E402
from l2l_api.settings import Settings  # noqa: E402

EXAMPLES_PER_OPERATION = 25


def _settings(data_dir: Path) -> Settings:
    return Settings(data_dir=data_dir, workers=0, token=TOKEN, max_queued=10_000)


# The schema is rendered without starting the app (FastAPI builds it from the routes), so the
# module can be collected without touching any store; the app's lifespan starts with the first
# generated request, inside the fixture below, on the test's own data directory.
app = create_app(_settings(Path("/nonexistent")))
schema = schemathesis.openapi.from_dict(app.openapi())
schema.app = app  # requests go to the app in process (what openapi.from_asgi sets)


@pytest.fixture(scope="module", autouse=True)
def app_data(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("api-schema")
    with isolated_mlflow(root / "mlflow"):
        app.state.settings = _settings(root / "data")
        try:
            yield
        finally:
            shutdown_lifespans()


@schema.parametrize()
@settings(
    max_examples=EXAMPLES_PER_OPERATION,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_no_server_errors(case) -> None:
    case.call_and_validate(headers=auth(), checks=[not_a_server_error])
