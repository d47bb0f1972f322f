"""Bring compose.yaml's services up in one podman pod, and take them down again.

    python deploy/compose_pod.py up   --pod NAME [--file compose.yaml] [--host-port 8000=18080 ...]
    python deploy/compose_pod.py down --pod NAME [--file compose.yaml]

Why not podman-compose or `docker compose` against podman's socket: both wait for
``condition: service_healthy`` through the engine's health status, and podman runs health
checks from systemd timers, which a machine without systemd (containers, CI sandboxes) does not
have: the stack never becomes healthy. Here each health check is run with ``podman healthcheck
run`` on compose's own schedule (start_period, interval, retries). And one pod instead of a
network: its containers share one network namespace, so the service names resolve to the pod's
loopback (``--add-host``) and no DNS plugin or network backend beyond the pod's port mapping is
needed.

What it reads of compose.yaml: image, entrypoint, command, environment (with ``${VAR}``,
``${VAR:-default}`` and ``${VAR:?message}`` from this process's environment), volumes (named
volumes become ``<pod>-<name>``; ``./path`` binds resolve beside the file), ports (published on
the pod; ``--host-port`` moves a host port), healthcheck, depends_on (started and healthy
conditions), restart, stop_grace_period. Anything else in a service is refused, so a setting
added to compose.yaml cannot be silently ignored here. ``build`` is not done here: the images
must exist (deploy/compose-smoke builds them first).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

UNDERSTOOD = {
    "build", "image", "entrypoint", "command", "environment", "volumes", "ports", "healthcheck",
    "depends_on", "restart", "stop_grace_period",
}
VARIABLE = re.compile(r"\$\{(?P<name>\w+)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")
DURATION = re.compile(r"(?:(?P<m>\d+)m)?(?:(?P<s>\d+(?:\.\d+)?)s)?$")


class ComposeError(Exception):
    """compose.yaml asks for something this driver does not do, or a service failed."""


def interpolate(value: str, env: Mapping[str, str]) -> str:
    def substitute(match: re.Match[str]) -> str:
        name, op, arg = match["name"], match["op"], match["arg"] or ""
        current = env.get(name)
        unset_or_empty = not current if op and op.startswith(":") else current is None
        if op in (":-", "-"):
            return arg if unset_or_empty else str(current)
        if op in (":?", "?"):
            if unset_or_empty:
                raise ComposeError(f"${{{name}}}: {arg or 'required'}")
            return str(current)
        return current or ""

    return VARIABLE.sub(substitute, value.replace("$$", "\0")).replace("\0", "$")


def seconds(duration: str | int | float | None, default: float) -> float:
    if duration is None:
        return default
    if isinstance(duration, (int, float)):
        return float(duration)
    match = DURATION.match(duration.strip())
    if not match or not any(match.groups()):
        raise ComposeError(f"unsupported duration {duration!r} (use e.g. 30s or 1m30s)")
    return 60 * float(match["m"] or 0) + float(match["s"] or 0)


@dataclass(frozen=True)
class Port:
    host_ip: str
    host_port: int
    container_port: int

    @classmethod
    def parse(cls, spec: str) -> Port:
        parts = str(spec).split(":")
        if len(parts) != 3:
            raise ComposeError(f"port {spec!r}: publish as HOST_IP:HOST_PORT:CONTAINER_PORT")
        return cls(parts[0], int(parts[1]), int(parts[2]))


class Stack:
    def __init__(self, file: Path, pod: str, env: Mapping[str, str], host_ports: dict[int, int]) -> None:
        self.file = file.resolve()
        self.pod = pod
        self.env = env
        self.host_ports = host_ports
        compose = yaml.safe_load(self.file.read_text())
        self.services: dict[str, dict[str, Any]] = compose["services"]
        self.volumes: set[str] = set(compose.get("volumes") or {})
        for name, service in self.services.items():
            unknown = set(service) - UNDERSTOOD
            if unknown:
                raise ComposeError(f"service {name}: {sorted(unknown)} not supported (supported: {sorted(UNDERSTOOD)})")

    def container(self, service: str) -> str:
        return f"{self.pod}-{service}"

    def order(self) -> list[str]:
        """Services with every dependency before its dependents."""
        done: list[str] = []

        def visit(name: str, path: tuple[str, ...]) -> None:
            if name in done:
                return
            if name in path:
                raise ComposeError(f"dependency cycle: {' -> '.join(path + (name,))}")
            for dependency in self.dependencies(name):
                visit(dependency, path + (name,))
            done.append(name)

        for name in self.services:
            visit(name, ())
        return done

    def dependencies(self, service: str) -> dict[str, str]:
        depends = self.services[service].get("depends_on") or {}
        if isinstance(depends, list):
            return {name: "service_started" for name in depends}
        return {name: (spec or {}).get("condition", "service_started") for name, spec in depends.items()}

    # -- podman arguments -------------------------------------------------------------------------

    def pod_arguments(self) -> list[str]:
        arguments = ["podman", "pod", "create", "--name", self.pod]
        for service in self.services.values():
            for spec in service.get("ports") or []:
                port = Port.parse(interpolate(str(spec), self.env))
                host_port = self.host_ports.get(port.container_port, port.host_port)
                arguments += ["--publish", f"{port.host_ip}:{host_port}:{port.container_port}"]
        for name in self.services:  # the names other services use reach the pod's loopback
            arguments += ["--add-host", f"{name}:127.0.0.1"]
        return arguments

    def run_arguments(self, name: str) -> list[str]:
        service = self.services[name]
        arguments = ["podman", "run", "--detach", "--pod", self.pod, "--name", self.container(name)]
        environment = service.get("environment") or {}
        if isinstance(environment, list):
            environment = dict(item.split("=", 1) for item in environment)
        for key, value in environment.items():
            arguments += ["--env", f"{key}={interpolate(str(value), self.env)}"]
        for spec in service.get("volumes") or []:
            source, _, rest = interpolate(str(spec), self.env).partition(":")
            if source.startswith((".", "/")):
                source = str((self.file.parent / source).resolve())
            elif source in self.volumes:
                source = f"{self.pod}-{source}"
            else:
                raise ComposeError(f"service {name}: volume {source!r} is not declared under volumes")
            arguments += ["--volume", f"{source}:{rest}"]
        health = service.get("healthcheck")
        if not health:  # the image's own HEALTHCHECK, if any: no timer either
            arguments += ["--health-interval", "disable"]
        else:
            test = health["test"]
            if isinstance(test, str) or test[0] == "CMD-SHELL":
                command = test if isinstance(test, str) else test[1]
                arguments += ["--health-cmd", command]  # podman runs a plain string through a shell
            elif test[0] == "CMD":
                arguments += ["--health-cmd", json.dumps(test[1:])]
            else:
                raise ComposeError(f"service {name}: healthcheck test {test[0]!r} not supported")
            # No timer (it would need systemd): Stack.wait_healthy runs the check itself.
            arguments += ["--health-interval", "disable",
                          "--health-timeout", f"{seconds(health.get('timeout'), 30):g}s"]
        if "restart" in service:
            arguments += ["--restart", service["restart"]]
        if "stop_grace_period" in service:
            arguments += ["--stop-timeout", f"{seconds(service['stop_grace_period'], 10):.0f}"]
        entrypoint = service.get("entrypoint")
        if entrypoint is not None:
            arguments += ["--entrypoint", json.dumps(entrypoint) if isinstance(entrypoint, list) else entrypoint]
        if "image" not in service:
            raise ComposeError(f"service {name}: no image (build it and name it in compose.yaml)")
        arguments.append(interpolate(service["image"], self.env))
        command = service.get("command")
        if command is not None:
            words = shlex.split(command) if isinstance(command, str) else [str(word) for word in command]
            arguments += [interpolate(word, self.env) for word in words]
        return arguments

    # -- up and down ------------------------------------------------------------------------------

    def wait_healthy(self, name: str) -> float:
        """Run the service's health check on compose's schedule until it passes; seconds taken."""
        health = self.services[name].get("healthcheck")
        started = time.monotonic()
        if not health:
            return 0.0
        interval = seconds(health.get("interval"), 30)
        deadline = started + seconds(health.get("start_period"), 0) + interval * int(health.get("retries", 3))
        container = self.container(name)
        while True:
            state = _podman("inspect", "--format", "{{.State.Status}}", container).stdout.strip()
            if state not in ("running", "created", "configured"):
                raise ComposeError(f"service {name} is {state} (podman logs {container})")
            check = subprocess.run(["podman", "healthcheck", "run", container], capture_output=True, text=True)
            if check.returncode == 0:
                return time.monotonic() - started
            if time.monotonic() > deadline:
                raise ComposeError(f"service {name} not healthy in {deadline - started:.0f} s (podman logs {container})")
            # Sooner than compose's interval: a smoke test wants the moment it is up.
            time.sleep(min(interval, 2.0))

    def up(self) -> dict[str, float]:
        """Start every service in dependency order, then wait for every health check compose.yaml
        declares; seconds from start to healthy per service that has one."""
        _podman(*self.pod_arguments()[1:])
        for volume in sorted(self.volumes):
            _podman("volume", "create", f"{self.pod}-{volume}")
        timings: dict[str, float] = {}
        started_at: dict[str, float] = {}
        for name in self.order():
            for dependency, condition in self.dependencies(name).items():
                if condition == "service_healthy" and dependency not in timings:
                    self.wait_healthy(dependency)
                    timings[dependency] = time.monotonic() - started_at[dependency]
                elif condition not in ("service_started", "service_healthy"):
                    raise ComposeError(f"service {name}: depends_on condition {condition!r} not supported")
            started_at[name] = time.monotonic()
            _podman(*self.run_arguments(name)[1:])
            print(f"compose_pod: started {name}", file=sys.stderr)
        for name in self.services:
            if name not in timings and self.services[name].get("healthcheck"):
                self.wait_healthy(name)
                timings[name] = time.monotonic() - started_at[name]
        return timings

    def down(self) -> None:
        """Stop and remove the pod, its containers and its volumes (idempotent)."""
        subprocess.run(["podman", "pod", "rm", "--force", "--time", "30", self.pod], capture_output=True)
        for volume in sorted(self.volumes):
            subprocess.run(["podman", "volume", "rm", "--force", f"{self.pod}-{volume}"], capture_output=True)


def _podman(*arguments: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["podman", *arguments], capture_output=True, text=True)
    if result.returncode != 0:
        raise ComposeError(f"podman {shlex.join(arguments[:3])} ... failed: {result.stderr.strip()[-2000:]}")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("action", choices=["up", "down", "print"])
    parser.add_argument("--pod", required=True, help="the pod's name; containers and volumes are prefixed with it")
    parser.add_argument("--file", type=Path, default=Path(__file__).resolve().parent.parent / "compose.yaml")
    parser.add_argument("--host-port", action="append", default=[], metavar="CONTAINER=HOST",
                        help="publish a container port on another host port than compose.yaml's")
    args = parser.parse_args(argv)
    host_ports = {int(c): int(h) for c, h in (spec.split("=", 1) for spec in args.host_port)}
    try:
        stack = Stack(args.file, args.pod, os.environ, host_ports)
        if args.action == "print":
            for arguments in [stack.pod_arguments()] + [stack.run_arguments(name) for name in stack.order()]:
                print(shlex.join(arguments))
        elif args.action == "up":
            for name, taken in stack.up().items():
                print(f"compose_pod: {name} healthy {taken:.0f} s after its start", file=sys.stderr)
        else:
            stack.down()
    except ComposeError as error:
        print(f"compose_pod: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
