"""The ``metagov`` command line, run as a user would, against a real SQLite file."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from metagov.cli import app
from metagov.crypto import generate_key

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
    assert "driver_event_url" in out
    assert "http:// or https:// URL with a host" in out
