"""A fake GitHub (respx at https://api.github.test and https://github.test) for the plugin's tests:
the App's RSA key is made at test time and every JWT GitHub receives is checked with its public
key; webhooks are signed with the App's webhook secret as GitHub signs them. Payloads follow
GitHub's documented shapes."""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import jwt
import respx
from cryptography.hazmat.primitives.asymmetric import rsa

from metagov.plugins.github.schemas import GitHubSettings
from metagov.testing import TestGateway

API = "https://api.github.test"
WEB = "https://github.test"
BASE = "https://metagov.test"
APP_ID = "424242"
SLUG = "metagov-governance"
CLIENT_ID = "Iv1.8a61f9b3a7aba766"
WEBHOOK_SECRET = "It's a Secret to Everybody"
INSTALLATION = 5678901
OWNER = "octo-org"
REPO = "hello-world"
EVENTS = "https://driver.test/events"
DONE = "https://driver.test/github/done"
GITHUB_CONFIG = {"installation_id": str(INSTALLATION), "owner": OWNER}


@dataclass(frozen=True)
class AppKey:
    pem: str
    public: rsa.RSAPublicKey


def github_settings(app_key: AppKey, **overrides: Any) -> GitHubSettings:
    values: dict[str, Any] = {
        "app_id": APP_ID,
        "app_slug": SLUG,
        "private_key": app_key.pem,
        "webhook_secret": WEBHOOK_SECRET,
        "client_id": CLIENT_ID,
        "client_secret": "client-secret-value",
        "api_url": API,
        "web_url": WEB,
        **overrides,
    }
    return GitHubSettings(_env_file=None, **values)  # type: ignore[call-arg]


def user(login: str, user_id: int, kind: str = "User") -> dict[str, Any]:
    return {
        "login": login,
        "id": user_id,
        "node_id": "MDQ6VXNlcjE=",
        "avatar_url": f"https://avatars.githubusercontent.com/u/{user_id}?v=4",
        "gravatar_id": "",
        "url": f"{API}/users/{login}",
        "html_url": f"{WEB}/{login}",
        "type": kind,
        "site_admin": False,
    }


BOT = user(f"{SLUG}[bot]", 98765, "Bot")


def installation_json(
    installation_id: int = INSTALLATION,
    account: str = OWNER,
    target_type: str = "Organization",
    suspended_at: str | None = None,
) -> dict[str, Any]:
    return {
        "id": installation_id,
        "account": user(account, 38302899, target_type),
        "access_tokens_url": f"{API}/app/installations/{installation_id}/access_tokens",
        "repositories_url": f"{API}/installation/repositories",
        "html_url": f"{WEB}/organizations/{account}/settings/installations/{installation_id}",
        "app_id": int(APP_ID),
        "app_slug": SLUG,
        "target_id": 38302899,
        "target_type": target_type,
        "permissions": {"issues": "write", "metadata": "read", "pull_requests": "write"},
        "events": ["issues", "issue_comment", "pull_request"],
        "single_file_name": None,
        "has_multiple_single_files": False,
        "single_file_paths": [],
        "repository_selection": "selected",
        "created_at": "2024-03-01T10:00:00.000Z",
        "updated_at": "2024-03-01T10:00:00.000Z",
        "suspended_at": suspended_at,
        "suspended_by": None,
    }


def repository_json(name: str = REPO) -> dict[str, Any]:
    return {
        "id": 186853002,
        "node_id": "MDEwOlJlcG9zaXRvcnkxODY4NTMwMDI=",
        "name": name,
        "full_name": f"{OWNER}/{name}",
        "private": False,
        "owner": user(OWNER, 38302899, "Organization"),
        "html_url": f"{WEB}/{OWNER}/{name}",
        "description": None,
        "fork": False,
        "url": f"{API}/repos/{OWNER}/{name}",
        "default_branch": "main",
    }


def issue_json(
    number: int, title: str = "A question", *, repo: str = REPO, state: str = "open"
) -> dict[str, Any]:
    return {
        "url": f"{API}/repos/{OWNER}/{repo}/issues/{number}",
        "repository_url": f"{API}/repos/{OWNER}/{repo}",
        "comments_url": f"{API}/repos/{OWNER}/{repo}/issues/{number}/comments",
        "html_url": f"{WEB}/{OWNER}/{repo}/issues/{number}",
        "id": 444500000 + number,
        "node_id": "MDU6SXNzdWU0NDQ1MDAwNDE=",
        "number": number,
        "title": title,
        "user": BOT,
        "labels": [],
        "state": state,
        "state_reason": "completed" if state == "closed" else None,
        "locked": False,
        "assignee": None,
        "assignees": [],
        "comments": 0,
        "created_at": "2024-03-01T10:00:00Z",
        "updated_at": "2024-03-01T10:00:00Z",
        "closed_at": None,
        "author_association": "NONE",
        "body": "",
    }


_ids = itertools.count(1_900_000_001)


def comment_json(
    author: dict[str, Any], body: str, number: int, *, repo: str = REPO, comment_id: int = 0
) -> dict[str, Any]:
    cid = comment_id or next(_ids)
    return {
        "url": f"{API}/repos/{OWNER}/{repo}/issues/comments/{cid}",
        "html_url": f"{WEB}/{OWNER}/{repo}/issues/{number}#issuecomment-{cid}",
        "issue_url": f"{API}/repos/{OWNER}/{repo}/issues/{number}",
        "id": cid,
        "node_id": "MDEyOklzc3VlQ29tbWVudDE=",
        "user": author,
        "created_at": "2024-03-01T10:05:00Z",
        "updated_at": "2024-03-01T10:05:00Z",
        "author_association": "MEMBER",
        "performed_via_github_app": None,
        "body": body,
    }


def reaction_json(
    reaction_id: int, author: dict[str, Any], content: str, created_at: str
) -> dict[str, Any]:
    return {
        "id": reaction_id,
        "node_id": "MDg6UmVhY3Rpb24x",
        "user": author,
        "content": content,
        "created_at": created_at,
    }


def sign(body: bytes, secret: str = WEBHOOK_SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


@dataclass
class FakeGitHub:
    """The fake GitHub of one test: its routes, its minted tokens, and the App's public key."""

    router: respx.MockRouter
    key: AppKey
    tokens: list[str] = field(default_factory=list)
    expires_in: timedelta = timedelta(hours=1)

    def __post_init__(self) -> None:
        self.driver = self.router.post(EVENTS).respond(204)
        self.installation = self.router.get(f"{API}/app/installations/{INSTALLATION}").respond(
            json=installation_json()
        )
        self.minted = self.router.post(
            f"{API}/app/installations/{INSTALLATION}/access_tokens"
        ).mock(side_effect=self._mint)

    def _mint(self, request: httpx.Request) -> httpx.Response:
        token = f"ghs_token{len(self.tokens) + 1:03d}"
        self.tokens.append(token)
        expires = (datetime.now(UTC) + self.expires_in).strftime("%Y-%m-%dT%H:%M:%SZ")
        return httpx.Response(
            201,
            json={
                "token": token,
                "expires_at": expires,
                "permissions": {"issues": "write", "metadata": "read"},
                "repository_selection": "selected",
            },
        )

    def claims(self, request: httpx.Request) -> dict[str, Any]:
        """The App JWT a request carried, verified with the App's public key."""
        scheme, _, token = request.headers["authorization"].partition(" ")
        assert scheme == "Bearer"
        assert jwt.get_unverified_header(token)["alg"] == "RS256"
        claims: dict[str, Any] = jwt.decode(
            token, self.key.public, algorithms=["RS256"], issuer=APP_ID
        )
        return claims

    def repo(self, path: str, name: str = REPO) -> str:
        return f"{API}/repos/{OWNER}/{name}{path}"

    def events(self) -> list[dict[str, Any]]:
        """What the Driver received so far, oldest first."""
        return [json.loads(call.request.content) for call in self.driver.calls]


async def post_webhook(
    gateway: TestGateway,
    event: str,
    payload: dict[str, Any],
    delivery: str,
    *,
    signature: str | None = None,
    extra: dict[str, str] | None = None,
) -> httpx.Response:
    body = json.dumps(payload).encode()
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "GitHub-Hookshot/7f0b2a4",
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery,
        "X-GitHub-Hook-ID": "292430182",
        "X-GitHub-Hook-Installation-Target-ID": APP_ID,
        "X-GitHub-Hook-Installation-Target-Type": "integration",
        "X-Hub-Signature-256": sign(body) if signature is None else signature,
    }
    if signature == "":
        del headers["X-Hub-Signature-256"]
    headers.update(extra or {})
    return await gateway.client.post("/api/hooks/github", content=body, headers=headers)


def installation_ref() -> dict[str, Any]:
    return {"id": INSTALLATION, "node_id": "MDIzOkludGVncmF0aW9uSW5zdGFsbGF0aW9uNTY3ODkwMQ=="}
