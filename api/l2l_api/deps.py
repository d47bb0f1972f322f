"""What endpoints take from the application: its settings, job store, job service, run placement and pool."""

from __future__ import annotations

from fastapi import Request

from l2l_api.db import JobStore
from l2l_api.jobs import JobService
from l2l_api.run_creation import RunPlacement
from l2l_api.settings import Settings
from l2l_api.supervisor import WorkerPool


def settings(request: Request) -> Settings:
    return request.app.state.settings


def store(request: Request) -> JobStore:
    return request.app.state.store


def job_service(request: Request) -> JobService:
    return request.app.state.jobs


def pool(request: Request) -> WorkerPool:
    return request.app.state.pool


def run_placement(request: Request) -> RunPlacement:
    return request.app.state.runs
