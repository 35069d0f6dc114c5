"""Shared fixtures: a fleet of real sshd on loopback, and connect options that trust it."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from edgectl.transport.base import ConnectOptions
from tests.fleet import SSHD, Fleet, FleetSession, cannot_run_here, trusting_options

FleetFactory = Callable[..., Fleet]


def _fleet_available() -> str | None:
    """Why the fleet cannot run here, or None when it can."""
    if not os.path.exists(SSHD):
        return f"{SSHD} is not installed"
    if shutil.which("ssh-keygen") is None:
        return "ssh-keygen is not installed"
    return None


@pytest.fixture(scope="session")
def fleet_session() -> Iterator[FleetSession]:
    """The test user, the client key and the address allocator of this session."""
    missing = _fleet_available()
    if missing:
        cannot_run_here(f"integration tests need the sshd test fleet: {missing}")
    session = FleetSession.create()
    try:
        yield session
    finally:
        session.close()


@pytest.fixture(scope="session")
def fleet(fleet_session: FleetSession) -> Fleet:
    """Four healthy sshd nodes shared by the session; tests must not break them."""
    return fleet_session.start(4)


@pytest.fixture
def fleet_factory(fleet_session: FleetSession) -> Iterator[FleetFactory]:
    """fleet_factory(n, max_startups=..., password=..., password_nodes=...) -> a new Fleet.

    For tests that break nodes (stop, kill, new host key): each fleet is stopped at the
    end of the test.
    """
    started: list[Fleet] = []

    def start(count: int, **options: object) -> Fleet:
        fleet = fleet_session.start(count, **options)
        started.append(fleet)
        return fleet

    yield start
    for fleet in started:
        fleet.close()


@pytest.fixture
def fleet_options(fleet: Fleet, tmp_path: Path) -> ConnectOptions:
    """Connect options that trust the shared fleet's host keys."""
    return trusting_options(fleet, tmp_path)
