"""One gateway and one example Driver for the session (see driver_stack.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from driver_stack import Stack, run_stack


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    with run_stack() as stack:
        yield stack
