"""The App's settings as an operator writes them: the private key as PEM text (also on one line
with literal ``\\n``) or as a file, and the allow-list of ``github.method``."""

from __future__ import annotations

from pathlib import Path

import jwt
import pytest
from pydantic import ValidationError

from metagov.plugins.github.client import NotConfigured, app_jwt
from metagov.plugins.github.schemas import DEFAULT_METHODS, GitHubSettings
from tests.plugins.github.fake import APP_ID, AppKey


def check(token: str, app_key: AppKey) -> None:
    claims = jwt.decode(token, app_key.public, algorithms=["RS256"], issuer=APP_ID)
    assert claims["exp"] - claims["iat"] <= 600


def test_the_private_key_as_text_on_one_line_or_in_a_file(
    app_key: AppKey, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("METAGOV_GITHUB__APP_ID", APP_ID)
    monkeypatch.setenv("METAGOV_GITHUB__PRIVATE_KEY", app_key.pem.replace("\n", "\\n"))
    check(app_jwt(GitHubSettings()), app_key)

    monkeypatch.delenv("METAGOV_GITHUB__PRIVATE_KEY")
    key_file = tmp_path / "app.private-key.pem"
    key_file.write_text(app_key.pem)
    monkeypatch.setenv("METAGOV_GITHUB__PRIVATE_KEY_FILE", str(key_file))
    check(app_jwt(GitHubSettings()), app_key)


@pytest.mark.parametrize(
    ("values", "words"),
    [
        ({"private_key": "-----BEGIN RSA PRIVATE KEY-----\nnope\n"}, "not a PEM private key"),
        ({"private_key_file": "/nonexistent/app.pem"}, "cannot be read"),
        ({}, "METAGOV_GITHUB__PRIVATE_KEY"),
        ({"app_id": None, "private_key": "x"}, "METAGOV_GITHUB__APP_ID"),
    ],
)
def test_a_missing_or_broken_key_is_named(values: dict[str, str | None], words: str) -> None:
    settings = GitHubSettings(_env_file=None, **{"app_id": APP_ID, **values})  # type: ignore[arg-type]
    with pytest.raises(NotConfigured) as raised:
        app_jwt(settings)
    assert words in raised.value.detail
    assert "nope" not in raised.value.detail


def test_the_method_allow_list_is_extended_or_replaced(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "METAGOV_GITHUB__EXTRA_METHODS",
        "PUT /repos/{owner}/{repo}/topics, POST /repos/{owner}/{repo}/pulls",
    )
    extended = GitHubSettings()
    assert extended.allowed_routes() == [
        *DEFAULT_METHODS,
        "PUT /repos/{owner}/{repo}/topics",
        "POST /repos/{owner}/{repo}/pulls",
    ]

    monkeypatch.setenv("METAGOV_GITHUB__METHOD_ALLOWLIST", "GET /repos/{owner}/{repo}")
    monkeypatch.delenv("METAGOV_GITHUB__EXTRA_METHODS")
    assert GitHubSettings().allowed_routes() == ["GET /repos/{owner}/{repo}"]

    monkeypatch.setenv("METAGOV_GITHUB__EXTRA_METHODS", "FETCH /repos")
    with pytest.raises(ValidationError, match="METHOD /path"):
        GitHubSettings()
