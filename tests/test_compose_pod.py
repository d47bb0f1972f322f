"""deploy/compose_pod.py reads compose.yaml as compose would (no podman needed here; the real
bring-up is deploy/compose-smoke)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("compose_pod", ROOT / "deploy" / "compose_pod.py")
assert spec is not None and spec.loader is not None
compose_pod = importlib.util.module_from_spec(spec)
sys.modules["compose_pod"] = compose_pod
spec.loader.exec_module(compose_pod)


def test_variables_are_interpolated_like_compose() -> None:
    env = {"SET": "value", "EMPTY": ""}
    # ":-" replaces unset or empty, "-" only unset.
    assert compose_pod.interpolate("a ${SET} ${MISSING:-d} ${EMPTY:-d} [${EMPTY-d}] ${MISSING-d}", env) == "a value d d [] d"
    assert compose_pod.interpolate("$${SET}", env) == "${SET}"
    with pytest.raises(compose_pod.ComposeError, match=r"\$\{MISSING\}: set it"):
        compose_pod.interpolate("${MISSING:?set it}", env)
    assert compose_pod.seconds("1m30s", 0) == 90 and compose_pod.seconds(None, 7) == 7
    with pytest.raises(compose_pod.ComposeError, match="duration"):
        compose_pod.seconds("soon", 0)


def test_the_real_compose_file_becomes_one_pod() -> None:
    stack = compose_pod.Stack(ROOT / "compose.yaml", "l2l-t", {"L2L_API_TOKEN": "tok", "POSTGRES_PASSWORD": "pw"},
                              host_ports={8000: 18080})
    assert stack.order() == ["postgres", "mlflow", "api"]  # dependencies first
    pod = " ".join(stack.pod_arguments())
    assert "--publish 127.0.0.1:18080:8000" in pod and "--publish 127.0.0.1:5000:5000" in pod
    for name in ("postgres", "mlflow", "api"):
        assert f"--add-host {name}:127.0.0.1" in pod

    api = stack.run_arguments("api")
    assert ["--pod", "l2l-t"] == api[3:5] and "L2L_API_TOKEN=tok" in api
    assert "L2L_API_DATABASE_URL=postgresql://mlflow:pw@postgres:5432/l2l_jobs" in api
    assert "l2l-t-api-data:/data" in api and api[-1] == "serve"
    postgres = stack.run_arguments("postgres")
    assert f"{ROOT / 'docker' / 'postgres-init'}:/docker-entrypoint-initdb.d:ro" in postgres  # a bind, resolved
    assert postgres[postgres.index("--health-cmd") + 1].startswith("pg_isready")
    mlflow = stack.run_arguments("mlflow")
    assert mlflow[mlflow.index("--entrypoint") + 1] == '["mlflow"]' and mlflow[mlflow.index("l2l-plugin:latest") + 1] == "server"


def test_a_missing_token_or_an_unknown_setting_is_refused(tmp_path: Path) -> None:
    stack = compose_pod.Stack(ROOT / "compose.yaml", "l2l-t", {}, host_ports={})
    with pytest.raises(compose_pod.ComposeError, match="L2L_API_TOKEN"):
        stack.run_arguments("api")
    compose = tmp_path / "compose.yaml"
    compose.write_text("services:\n  api:\n    image: x\n    network_mode: host\n")
    with pytest.raises(compose_pod.ComposeError, match="network_mode"):
        compose_pod.Stack(compose, "p", {}, host_ports={})
