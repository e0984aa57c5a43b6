"""The SDK's tests run against a real Conveyor: `CONVEYOR_URL` and `CONVEYOR_KEY` (a key with
scope `admin`) name it. The Rust suite starts one and runs these (tests/e2e/sdks.rs); by hand:

    cargo run --release -- all &
    CONVEYOR_URL=http://127.0.0.1:8080 CONVEYOR_KEY=cvk_… pytest sdk/python/tests
"""

import os
import uuid

import pytest

from conveyor import Client


@pytest.fixture(scope="session")
def url() -> str:
    value = os.environ.get("CONVEYOR_URL")
    if not value:
        pytest.fail("CONVEYOR_URL and CONVEYOR_KEY must name a running Conveyor")
    return value


@pytest.fixture(scope="session")
def key() -> str:
    return os.environ["CONVEYOR_KEY"]


@pytest.fixture
def client(url, key):
    with Client(url, key) as c:
        yield c


@pytest.fixture
def type_name() -> str:
    """A job type of this test's own, so tests run side by side without meeting."""
    return f"py-{uuid.uuid4().hex[:12]}"
