"""The ``metagov`` command line, run as a user would, against a real SQLite file."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from metagov.cli import app
from metagov.config import Settings
from metagov.crypto import generate_key
from tests.conftest import REDIS_URL

runner = CliRunner()


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    monkeypatch.chdir(tmp_path)
    values = {
        "METAGOV_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/cli.db",
        "METAGOV_SECRET_KEYS": generate_key(),
    }
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    return values


def run(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


def test_db_upgrade_and_check(env: dict[str, str]) -> None:
    code, out = run("db", "check")
    assert code == 1
    assert "metagov db upgrade" in out
    assert run("db", "upgrade")[0] == 0
    code, out = run("db", "check")
    assert code == 0
    assert "up to date" in out


def test_drivers_create_list_revoke(env: dict[str, str]) -> None:
    run("db", "upgrade")
    code, out = run("drivers", "create", "policykit", "--event-url", "https://pk.example/events")
    assert code == 0
    key = out.split("API key (Authorization: Bearer ...): ")[1].split()[0]
    assert key.startswith("mgk_")
    assert "Event signing secret (Standard Webhooks): whsec_" in out
    assert run("drivers", "create", "policykit")[0] == 1

    code, out = run("drivers", "list")
    assert code == 0
    assert "policykit\tactive\thttps://pk.example/events" in out
    assert key not in out

    assert run("drivers", "revoke", "policykit")[0] == 0
    assert "revoked" in run("drivers", "list")[1]
    assert run("drivers", "revoke", "nobody")[0] == 1


def test_plugins_list_and_keys(env: dict[str, str]) -> None:
    code, out = run("plugins", "list")
    assert code == 0
    lines = out.splitlines()
    assert any(line.startswith("randomness\tactions: get-lucky-number") for line in lines)
    code, out = run("keys", "generate")
    assert code == 0 and len(out.strip()) == 44
    run("db", "upgrade")
    code, out = run("keys", "rotate")
    assert code == 0
    assert "0 plugin instance(s)" in out


def test_bad_settings_are_reported_not_raised(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("METAGOV_SECRET_KEYS", "not-a-key")
    code, out = run("db", "check")
    assert code == 2
    assert "not a Fernet key" in out


def test_event_urls_must_be_http_urls(env: dict[str, str]) -> None:
    run("db", "upgrade")
    for bad in ("file:///etc/passwd", "not a url"):
        code, out = run("drivers", "create", "pk", "--event-url", bad)
        assert code == 1
        assert out.strip() == (
            "the event URL must be an http:// or https:// URL with a host (and no user or password)"
        )
    assert run("drivers", "create", "pk")[0] == 0
    code, out = run("drivers", "set-event-url", "pk", "gopher://127.0.0.1:6379/")
    assert code == 1
    assert "http:// or https:// URL with a host" in out
    assert "pk\tactive\t-" in run("drivers", "list")[1]
    code, _ = run("drivers", "set-event-url", "pk", "https://pk.example/events")
    assert code == 0


def test_a_bad_driver_event_url_setting_is_reported(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("METAGOV_DRIVER_EVENT_URL", "file:///etc/passwd")
    code, out = run("drivers", "list")
    assert code == 2
    assert "METAGOV_DRIVER_EVENT_URL" in out
    assert "http:// or https:// URL with a host" in out


# --- start-up errors: one line naming the variable, a non-zero status, no traceback -----------


def metagov(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """The installed ``metagov`` command as a user runs it, with only ``env``'s settings."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("METAGOV_")}
    return subprocess.run(  # noqa: S603 (our own command)
        [sys.executable, "-m", "metagov", *args],
        env={**clean, **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        ("METAGOV_DATABASE_URL", "not a url", "not a database URL"),
        ("METAGOV_DATABASE_URL", "mysql://db/metagov", "database 'mysql' is not supported"),
        ("METAGOV_DATABASE_URL", "postgresql+psycopg://db/x", "driver 'psycopg' is not supported"),
        ("METAGOV_REDIS_URL", "garbage", "not a Redis URL"),
        ("METAGOV_LOG_LEVEL", "foo", "must be 'DEBUG', 'INFO'"),
        ("METAGOV_DB_POOL_SIZE", "many", "valid integer"),
    ],
)
def test_invalid_setting_is_one_line_naming_the_variable(
    tmp_path: Path, variable: str, value: str, says: str
) -> None:
    done = metagov("serve", env={variable: value}, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    [line] = done.stderr.splitlines()
    assert line.startswith(f"metagov: invalid setting {variable}: "), line
    assert says in line, line
    assert "Traceback" not in done.stderr + done.stdout


def test_every_command_reports_settings_the_same_way(tmp_path: Path) -> None:
    variable, value, says = "METAGOV_LOG_LEVEL", "foo", "must be 'DEBUG', 'INFO'"
    for command in (["worker"], ["drivers", "list"], ["db", "upgrade"], ["doctor"]):
        done = metagov(*command, env={variable: value}, cwd=tmp_path)
        assert done.returncode == 2, (command, done.stderr)
        [line] = done.stderr.splitlines()
        assert line.startswith(f"metagov: invalid setting {variable}: "), (command, line)
        assert says in line, (command, line)
        assert "Traceback" not in done.stderr + done.stdout


def test_unreachable_database_is_one_line(tmp_path: Path) -> None:
    url = "postgresql://metagov:hunter2@127.0.0.1:9/metagov"  # the discard port: refused
    for command in (["serve"], ["drivers", "list"]):
        done = metagov(*command, env={"METAGOV_DATABASE_URL": url}, cwd=tmp_path)
        assert done.returncode == 1, (command, done.stderr)
        lines = [line for line in done.stderr.splitlines() if "metagov:" in line]
        assert len(lines) == 1, (command, done.stderr)
        assert lines[0].startswith(
            "metagov: cannot use the database at METAGOV_DATABASE_URL "
            "(postgresql+asyncpg://metagov:***@127.0.0.1:9/metagov): "
        ), lines
        assert "hunter2" not in done.stderr
        assert "Traceback" not in done.stderr


def test_unreachable_redis_is_one_line(tmp_path: Path) -> None:
    env = {
        "METAGOV_DATABASE_URL": f"sqlite:///{tmp_path}/metagov.db",
        "METAGOV_REDIS_URL": "redis://:s3cret@127.0.0.1:9/0",
    }
    for command in (["serve"], ["worker"]):
        done = metagov(*command, env=env, cwd=tmp_path)
        assert done.returncode == 1, (command, done.stderr)
        assert "metagov: cannot reach Redis at METAGOV_REDIS_URL (redis://:***@127.0.0.1:9/0)" in (
            done.stderr
        ), done.stderr
        assert "s3cret" not in done.stderr
        assert "Traceback" not in done.stderr


def test_plain_urls_get_the_async_drivers(env: dict[str, str], tmp_path: Path) -> None:
    plain = f"sqlite:///{tmp_path}/plain.db"
    os.environ["METAGOV_DATABASE_URL"] = plain
    assert run("db", "upgrade")[0] == 0
    code, out = run("db", "check")
    assert (code, "up to date" in out) == (0, True)
    assert Settings(_env_file=None).database_url == f"sqlite+aiosqlite:///{tmp_path}/plain.db"  # type: ignore[call-arg]
    os.environ["METAGOV_DATABASE_URL"] = "postgresql://u:p%40ss@db.example:5433/metagov"
    pg = Settings(_env_file=None).database_url  # type: ignore[call-arg]
    assert pg == "postgresql+asyncpg://u:p%40ss@db.example:5433/metagov"


def test_port_out_of_range_is_refused(env: dict[str, str]) -> None:
    for port in ("83538", "0", "-1"):
        code, out = run("serve", "--port", port)
        assert code == 2
        assert "--port" in out


def test_driver_names_are_validated(env: dict[str, str]) -> None:
    run("db", "upgrade")
    for name in ("", " ", "has space", "_underscore_first", "x" * 101, "tab\tname"):
        code, out = run("drivers", "create", name)
        assert code == 1, name
        assert "invalid Driver name" in out
    assert run("drivers", "list")[1] == ""
    assert run("drivers", "create", "policy.kit_2-b")[0] == 0


def test_tracing_that_cannot_be_honoured_is_one_line(tmp_path: Path) -> None:
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
    }
    done = metagov("serve", env=env, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    [line] = done.stderr.splitlines()
    assert line.startswith("metagov: invalid setting OTEL_EXPORTER_OTLP_PROTOCOL: 'grpc'"), line


def test_worker_refuses_a_database_without_the_schema(tmp_path: Path) -> None:
    env = {
        "METAGOV_DATABASE_URL": f"sqlite:///{tmp_path}/empty.db",
        "METAGOV_REDIS_URL": REDIS_URL,
    }
    done = metagov("worker", env=env, cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    assert "run `metagov db upgrade` first (workers never migrate)" in done.stderr
    assert "Traceback" not in done.stderr
