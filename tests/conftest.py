"""Shared fixtures: real ``docker-registry`` processes on loopback.

``source`` is a registry with htpasswd Basic auth; ``gitlab`` a GitLab-like registry with token
auth backed by a JWT token server (``tokens``). Credentials are deliberately distinctive strings
so tests can assert they never leak.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from ecrcopy.testing import Registry, TokenServer

SRC_USER, SRC_PASSWORD = "alice", "src-Secret-7f3a9c"
DST_USER, DST_PASSWORD = "bob", "dst-Secret-52e1d0"
SRC_CREDS = (SRC_USER, SRC_PASSWORD)
DST_CREDS = (DST_USER, DST_PASSWORD)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def no_leaked_threads() -> Iterator[None]:
    """Fails a test that leaves threads behind (servers of the testing package must stop cleanly)."""
    before = set(threading.enumerate())
    yield
    leaked = [t for t in threading.enumerate() if t not in before and t.is_alive()]
    assert not leaked, leaked


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test (and every CLI it starts) gets its own blob location cache."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture
def source(tmp_path: Path) -> Iterator[Registry]:
    with Registry(tmp_path / "source", htpasswd={SRC_USER: SRC_PASSWORD}) as registry:
        yield registry


@pytest.fixture
def tokens() -> Iterator[TokenServer]:
    with TokenServer(users={DST_USER: DST_PASSWORD}) as server:
        yield server


@pytest.fixture
def gitlab(tmp_path: Path, tokens: TokenServer) -> Iterator[Registry]:
    with Registry(tmp_path / "gitlab", token_auth=tokens) as registry:
        yield registry
