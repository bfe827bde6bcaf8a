"""The client stays a small, separate package: a Driver must not inherit the gateway's server
dependencies."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import requires


def test_it_depends_on_httpx_only() -> None:
    assert [r.split(">")[0].split("=")[0] for r in requires("metagov-client") or []] == ["httpx"]


def test_importing_it_imports_nothing_of_the_gateway() -> None:
    probe = (
        "import sys, metagov_client, metagov_client.testing;"
        "loaded = [m for m in sys.modules if m.split('.')[0] in "
        "{'metagov', 'fastapi', 'pydantic', 'sqlalchemy', 'starlette'}];"
        "print(','.join(loaded))"
    )
    out = subprocess.run(  # noqa: S603
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == ""
