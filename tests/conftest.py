"""Shared pytest fixtures.

stub_server: a fresh OpenAI-compatible server on 127.0.0.1 (tests/servers/openai_stub.py),
stopped after the test.  Queue behaviours with .enqueue(...), read .requests after.
keyed_stub: the same, but like OpenAI it refuses requests without the test module's (fake) KEY.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# `tests` has no __init__.py; make `import tests.servers...` work however pytest is started.
ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.servers.openai_stub import StubServer  # noqa: E402


@pytest.fixture
def stub_server():
    """Example: def test_x(stub_server): stub_server.enqueue("Hi!"); ... stub_server.base_url"""
    with StubServer() as server:
        yield server


@pytest.fixture
def keyed_stub(request):
    """Example: KEY = "sk-test-..." at the top of the module; def test_x(keyed_stub): ... a 401 without it.

    Each module keeps its own fake KEY (its tests check that this exact key never leaks), so the
    fixture reads the key from the module of the test that asks for it.
    """
    with StubServer(api_key=request.module.KEY) as server:
        yield server
