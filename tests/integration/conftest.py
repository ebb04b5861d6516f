"""Fixtures of the end-to-end tests. The stack must be up: `make test` starts it first."""

import pytest

from harness import pg_connect, warehouse_connect


@pytest.fixture
def pg():
    conn = pg_connect()
    yield conn
    conn.close()


@pytest.fixture
def wh():
    conn = warehouse_connect()
    yield conn
    conn.close()
