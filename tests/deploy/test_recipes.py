"""The deployment recipes and the repository's hygiene, checked as far as this machine can: the
Compose file parsed (Docker cannot run here), the systemd units verified by systemd itself, the
lock file against pyproject.toml, the image's pins, the Makefile's targets."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return loaded


def test_compose_starts_the_production_topology() -> None:
    services = compose()["services"]
    assert set(services) == {"postgres", "redis", "migrate", "api", "worker", "proxy"}
    assert services["migrate"]["command"] == ["metagov", "db", "upgrade"]
    api, worker = services["api"], services["worker"]
    assert api["command"][:2] == ["metagov", "serve"]
    assert worker["command"][:2] == ["metagov", "worker"]
    assert api["environment"]["METAGOV_AUTO_MIGRATE"] == "false", "migrations run once, apart"
    for service in (api, worker):
        assert service["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}
        assert service["depends_on"]["redis"] == {"condition": "service_healthy"}
        assert service["env_file"] == "metagov.env"
        assert service["deploy"]["replicas"] >= 2
    grace = int(worker["stop_grace_period"].removesuffix("s"))
    assert grace > 30, "longer than the worker's own grace for running jobs"
    assert "9100" in " ".join(worker["healthcheck"]["test"])
    assert services["redis"]["command"][-1] == "no", "Redis keeps nothing: it only rings"
    for name, service in services.items():
        image = service.get("image", "")
        assert re.fullmatch(r"[a-z]+:(\d+(\.\d+)+-[a-z]+|latest)", image), (name, image)
        if image.endswith(":latest"):
            assert service["build"]["context"] == "..", "our own image, built from this checkout"
    assert (DEPLOY / "nginx.conf").read_text().count("server api:8000") == 1
    env = (DEPLOY / "metagov.env.example").read_text()
    for variable in ("METAGOV_DATABASE_URL", "METAGOV_REDIS_URL", "METAGOV_SECRET_KEYS"):
        assert f"\n{variable}=" in env


UNITS = ["metagov-migrate.service", "metagov-api@.service", "metagov-worker@.service"]


def test_systemd_units_verify(tmp_path: Path) -> None:
    """``systemd-analyze verify`` on the units, with the installed ``metagov`` standing in for
    /opt/metagov's (it checks that ExecStart's program exists)."""
    installed = Path(sys.executable).parent / "metagov"
    for unit in [*UNITS, "metagov.target"]:
        text = (DEPLOY / "systemd" / unit).read_text()
        (tmp_path / unit).write_text(text.replace("/opt/metagov/venv/bin/metagov", str(installed)))
    (tmp_path / "metagov-api@8001.service").symlink_to("metagov-api@.service")
    (tmp_path / "metagov-worker@1.service").symlink_to("metagov-worker@.service")
    names = ["metagov-migrate.service", "metagov-api@8001.service", "metagov-worker@1.service"]
    analyze = shutil.which("systemd-analyze")
    if analyze is None:  # no systemd here: at least every line must be a section or a key
        for unit in [*UNITS, "metagov.target"]:
            for line in (tmp_path / unit).read_text().splitlines():
                assert not line or line.startswith(("#", "[")) or "=" in line, (unit, line)
        return
    done = subprocess.run(  # noqa: S603
        [analyze, "verify", *names, "metagov.target"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    # systemd only warns (status 0) about an unknown key or a bad value: any output is a failure.
    assert done.returncode == 0 and not done.stderr.strip() and not done.stdout.strip(), (
        done.stdout + done.stderr
    )
    worker = (DEPLOY / "systemd" / "metagov-worker@.service").read_text()
    timeout = int(re.search(r"^TimeoutStopSec=(\d+)$", worker, re.M).group(1))  # type: ignore[union-attr]
    assert timeout > 30, "longer than the worker's own grace for running jobs"


def _locked() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"not pinned: {line}"
            pins[canonicalize_name(name)] = version
    return pins


def test_the_lock_pins_every_dependency() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        wanted.extend(r for r in extra if not r.startswith("metagov"))
    wanted.append("hatchling")  # the build backend, installed from the lock by the Dockerfile
    pins = _locked()
    for raw in wanted:
        requirement = Requirement(raw)
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement.name} is not in constraints.txt: run `make lock`"
        assert requirement.specifier.contains(pins[name], prereleases=True), (raw, pins[name])


def test_image_and_ci_use_the_lock() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    [base] = re.findall(r"^ARG PYTHON_IMAGE=(\S+)$", dockerfile, re.M)
    assert re.fullmatch(r"python:\d+\.\d+\.\d+-slim-[a-z]+(@sha256:[0-9a-f]{64})?", base), base
    assert all(
        line.split()[1] == "${PYTHON_IMAGE}"
        for line in dockerfile.splitlines()
        if line.startswith("FROM ")
    )
    assert dockerfile.count("-c constraints.txt") == 2
    makefile = (ROOT / "Makefile").read_text()
    assert "-c $(CONSTRAINTS)" in makefile and "CONSTRAINTS := constraints.txt" in makefile
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert ci[-2:] == ["make bench-check", "make test"], "pytest's summary ends CI's output"


def make(*args: str) -> str:
    done = subprocess.run(  # noqa: S603
        ["make", "--no-print-directory", *args],  # noqa: S607
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_makefile_targets() -> None:
    listed = make("help")
    for target in ("run", "test", "lint", "bench-check", "bench", "format", "lock", "install"):
        assert re.search(rf"^  {target} +\S", listed, re.M), (target, listed)
    assert make() == listed, "help is the default target"
    commands = make("-n", "test").strip().splitlines()
    assert " -m pytest" in commands[-1], "the pytest summary is the last thing it prints"
    assert not any("-m bench" in line for line in commands), "benchmarks have their own target"
    run = make("-n", "run", "HOST=0.0.0.0", "PORT=9001").strip().splitlines()
    assert run[-1].endswith("metagov serve --host 0.0.0.0 --port 9001"), run


def test_license_matches_the_project() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "MIT"
    assert (ROOT / "LICENSE").read_text().startswith("MIT License\n")


def test_readme_says_what_make_test_runs_and_how_long() -> None:
    readme = (ROOT / "README.md").read_text()
    first_screen = "\n".join(readme.splitlines()[:40])
    assert "make run" in first_screen and "make test" in first_screen
    assert re.search(r"`make test`[^.]*takes about \d+ minutes", readme), "say how long"
