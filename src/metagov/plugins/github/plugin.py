"""The GitHub plugin: one GitHub App serves every community; each community's installation of
the App is an instance (``community_platform_id`` = the installation id).

The App authenticates with a JWT signed by its private key and acts on a community's
repositories with installation tokens minted from it (see :mod:`.client`). Every webhook is
checked against the App's webhook secret (``X-Hub-Signature-256``) before anything is stored, is
stored once per ``X-GitHub-Delivery``, and reaches the Driver as ``"{action} {event}"``.
Uninstalling the App disables the instance; suspending it suspends the instance until GitHub
says it is unsuspended.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote, urlencode

import httpx

from metagov.plugins.github.client import (
    GitHubClient,
    GitHubError,
    NotConfigured,
    get_installation,
    installation_client,
    mint_token,
)
from metagov.plugins.github.schemas import (
    AddLabels,
    CloseIssue,
    Comment,
    CreateIssue,
    GitHubConfig,
    GitHubSettings,
    Installation,
    Issue,
    Labels,
    Merged,
    MergePullRequest,
    MethodCall,
    MethodResult,
    NoParams,
    PostedComment,
    RemoveLabel,
)
from metagov.plugins.github.votes import IssueCommentVote, IssueReactVote, issue_key
from metagov.plugins.sdk import (
    AuthType,
    EventType,
    Initiator,
    OAuthError,
    OAuthInstall,
    Plugin,
    PluginContext,
    PluginError,
    UpstreamError,
    WebhookAccepted,
    WebhookRejected,
    WebhookReply,
    WebhookRequest,
    WebhookScope,
    action,
)

Ctx = PluginContext[GitHubConfig]

INSTALLATION_ID = re.compile(r"^[1-9][0-9]{0,19}$")
MAX_INSTALLATION_PAGES = 10
OWNER_TYPES = ("User", "Organization")


class GitHubPlugin(Plugin[GitHubConfig]):
    """GitHub App installations: events, issues and pull requests, and votes in issues."""

    name = "github"
    auth_type = AuthType.OAUTH
    config_model = GitHubConfig
    community_platform_id_field = "installation_id"
    webhooks = WebhookScope.PLATFORM
    settings_model = GitHubSettings
    processes = (IssueReactVote, IssueCommentVote)
    event_types = (
        EventType(
            "opened issues",
            "An issue was opened. Every webhook event is forwarded as `{action} {event}` (or "
            "the bare event name when it has no action), with GitHub's body as `data`",
        ),
        EventType("created issue_comment", "A comment was posted on an issue or pull request"),
        EventType("opened pull_request", "A pull request was opened"),
        EventType("closed pull_request", "A pull request was closed or merged"),
        EventType("push", "Commits were pushed"),
        EventType("deleted installation", "The App was uninstalled; the plugin is disabled"),
        EventType("suspend installation", "The installation was suspended; so is the plugin"),
        EventType("unsuspend installation", "The installation was unsuspended; so is the plugin"),
    )

    @property
    def app(self) -> GitHubSettings:
        settings: GitHubSettings = self.settings
        return settings

    # --- credentials --------------------------------------------------------------------------

    async def initialize(self, ctx: Ctx) -> None:
        """Check the installation against GitHub (it exists, it is on ``owner``'s account, it
        is not suspended) and mint a token if the instance has none for it."""
        installation_id = ctx.config.installation_id
        try:
            found = await get_installation(ctx.http, self.app, installation_id)
        except GitHubError as exc:
            if exc.status != 404:
                raise
            raise GitHubError(
                f"GitHub has no installation {installation_id} of this App", 404
            ) from None
        account = found.get("account") or {}
        login = str(account.get("login") or "")
        if login.casefold() != ctx.config.owner.casefold():
            raise PluginError(
                f"installation {installation_id} is on the account {login!r}, "
                f"not {ctx.config.owner!r}",
                code="github_owner_mismatch",
            )
        kind = found.get("target_type") or account.get("type")
        if ctx.config.owner_type is not None and kind != ctx.config.owner_type:
            raise PluginError(
                f"installation {installation_id} is on a {kind}, not a {ctx.config.owner_type}",
                code="github_owner_mismatch",
            )
        if found.get("suspended_at"):
            raise PluginError(
                f"installation {installation_id} is suspended on GitHub; unsuspend it first",
                code="github_installation_suspended",
            )
        if (
            ctx.config.installation_token is None
            or ctx.credentials_expire_at is None
            or ctx.state.get("token_installation_id") != installation_id
        ):
            await mint_token(ctx)

    async def refresh_credentials(self, ctx: Ctx) -> None:
        """Mint a new installation token. If GitHub will not mint one because the installation
        is gone or suspended, forget the old token instead of failing: the webhook that says so
        must still get through, and a later call reports GitHub's refusal."""
        try:
            await mint_token(ctx)
        except GitHubError as exc:
            if exc.status not in (403, 404):
                raise
            ctx.log.warning(
                "GitHub refused a token for installation %s (HTTP %s)",
                ctx.config.installation_id,
                exc.status,
            )
            ctx.update_secrets({"installation_token": None}, expires_at=None)

    # --- webhooks -----------------------------------------------------------------------------

    async def verify_webhook(
        self, request: WebhookRequest, config: GitHubConfig | None
    ) -> WebhookAccepted:
        secret = self.app.webhook_secret
        if secret is None:
            raise WebhookRejected("webhook_secret_not_configured")
        signature = request.headers.get("x-hub-signature-256", "").strip()
        if not signature:
            raise WebhookRejected("missing_signature")
        mac = hmac.new(secret.get_secret_value().encode(), request.body, hashlib.sha256)
        if not hmac.compare_digest(signature.encode(), f"sha256={mac.hexdigest()}".encode()):
            raise WebhookRejected("bad_signature")
        try:
            body = request.json()
        except (ValueError, UnicodeDecodeError):
            reply = {"detail": "the body is not JSON", "code": "bad_payload"}
            return WebhookAccepted(store=False, reply=WebhookReply(reply, status_code=400))
        installation = body.get("installation") if isinstance(body, dict) else None
        if not isinstance(installation, dict) or not isinstance(installation.get("id"), int):
            # `ping` and the App's own events concern no community.
            return WebhookAccepted(store=False)
        return WebhookAccepted(
            delivery_id=request.headers.get("x-github-delivery") or None,
            community_platform_id=str(installation["id"]),
        )

    async def receive_webhook(self, ctx: Ctx, webhook: WebhookRequest) -> None:
        body = webhook.json()
        event = webhook.headers.get("x-github-event") or "unknown"
        action_name = body.get("action") if isinstance(body, dict) else None
        event_type = f"{action_name} {event}" if isinstance(action_name, str) else event
        sender = body.get("sender") if isinstance(body, dict) else None
        sender = sender if isinstance(sender, dict) else {}
        login = sender.get("login")
        bot = self.app.bot_login
        ctx.emit_event(
            event_type[:200],
            body if isinstance(body, dict) else {"payload": body},
            Initiator(
                user_id=str(login) if login else None,
                provider="github",
                is_metagov_bot=bool(bot and login == bot),
            ),
        )
        if event == "installation":
            if action_name == "deleted":
                ctx.disable_instance("github: the App was uninstalled")
            elif action_name == "suspend":
                ctx.suspend_instance("github: the installation was suspended")
            elif action_name == "unsuspend":
                ctx.resume_instance()

    def webhook_keys(self, webhook: WebhookRequest) -> Sequence[str] | None:
        """Issue and comment webhooks concern the vote held in that issue, if any; the others
        concern no process."""
        try:
            key = issue_key(webhook.json())
        except (ValueError, UnicodeDecodeError):
            return ()
        return (key,) if key else ()

    # --- install ------------------------------------------------------------------------------

    def oauth_authorize_url(self, *, kind: str, redirect_uri: str, state: str) -> str:
        web = self.app.web_url.rstrip("/")
        if kind == "user":
            if not self.app.client_id:
                raise NotConfigured("the GitHub App has no client id (METAGOV_GITHUB__CLIENT_ID)")
            query = {"client_id": self.app.client_id, "redirect_uri": redirect_uri, "state": state}
            return f"{web}/login/oauth/authorize?{urlencode(query)}"
        if not self.app.app_slug:
            raise NotConfigured("the GitHub App is not configured (METAGOV_GITHUB__APP_SLUG)")
        # GitHub sends the browser back to the App's own setup (or callback) URL with the state.
        return (
            f"{web}/apps/{quote(self.app.app_slug)}/installations/new?{urlencode({'state': state})}"
        )

    async def oauth_exchange(
        self,
        *,
        kind: str,
        code: str | None,
        redirect_uri: str,
        http: httpx.AsyncClient,
        params: Mapping[str, str],
    ) -> OAuthInstall:
        if kind == "user":
            token = await self._user_token(http, code, redirect_uri)
            me = await GitHubClient(http, self.app.api_url, token, identity="user").call(
                "GET", "/user"
            )
            login = me.get("login") if isinstance(me, dict) else None
            return OAuthInstall(None, {}, installer_user_id=str(login) if login else None)
        if params.get("setup_action") == "request":
            raise OAuthError(
                "install_requested",
                "An owner of the account must approve the installation; install again once "
                "they have",
            )
        installation_id = params.get("installation_id") or ""
        if not INSTALLATION_ID.match(installation_id):
            raise OAuthError("missing_installation", "GitHub did not say what was installed")
        if self._verifies_installer:
            installation = await self._installers_installation(http, code, installation_id)
        else:
            try:
                installation = await get_installation(http, self.app, installation_id)
            except GitHubError:
                raise OAuthError(
                    "unknown_installation", "GitHub has no such installation of this App"
                ) from None
        account = installation.get("account") or {}
        kind_of = installation.get("target_type") or account.get("type")
        config = {
            "installation_id": installation_id,
            "owner": account.get("login"),
            "owner_type": kind_of if kind_of in OWNER_TYPES else None,
        }
        return OAuthInstall(installation_id, config)

    @property
    def _verifies_installer(self) -> bool:
        return bool(self.app.client_id and self.app.client_secret)

    async def _user_token(
        self, http: httpx.AsyncClient, code: str | None, redirect_uri: str | None
    ) -> str:
        """Trade the callback's code for a user access token (used once, never stored)."""
        if not self._verifies_installer or self.app.client_secret is None:
            raise OAuthError(
                "not_configured",
                "The GitHub App has no client id and secret (METAGOV_GITHUB__CLIENT_ID)",
            )
        if not code:
            raise OAuthError(
                "missing_code",
                "GitHub sent no authorization code: turn on 'Request user authorization "
                "(OAuth) during installation' in the App's settings",
            )
        form = {
            "client_id": self.app.client_id or "",
            "client_secret": self.app.client_secret.get_secret_value(),
            "code": code,
        }
        if redirect_uri is not None:  # the install flow sent none to GitHub
            form["redirect_uri"] = redirect_uri
        try:
            response = await http.post(
                f"{self.app.web_url.rstrip('/')}/login/oauth/access_token",
                data=form,
                headers={"Accept": "application/json", "User-Agent": "metagov"},
            )
        except httpx.HTTPError as exc:
            raise UpstreamError(f"GitHub could not be reached: {type(exc).__name__}") from None
        if response.status_code >= 500:
            raise UpstreamError(f"GitHub answered {response.status_code} to the code exchange")
        try:
            granted = response.json()
        except ValueError:
            raise UpstreamError("GitHub sent an unreadable answer to the code exchange") from None
        token = granted.get("access_token") if isinstance(granted, dict) else None
        if not token:
            error = granted.get("error") if isinstance(granted, dict) else None
            raise OAuthError(
                str(error or "bad_verification_code"),
                "GitHub refused the authorization code",
            )
        return str(token)

    async def _installers_installation(
        self, http: httpx.AsyncClient, code: str | None, installation_id: str
    ) -> dict[str, Any]:
        """The installation, if the user who came back from GitHub can access it: the
        ``installation_id`` of the callback URL alone proves nothing, anyone can type one."""
        token = await self._user_token(http, code, None)
        user = GitHubClient(http, self.app.api_url, token, identity="user")
        for page in range(1, MAX_INSTALLATION_PAGES + 1):
            listed = await user.call(
                "GET", "/user/installations", params={"per_page": 100, "page": page}
            )
            found = listed.get("installations") or [] if isinstance(listed, dict) else []
            for installation in found:
                if (
                    isinstance(installation, dict)
                    and str(installation.get("id")) == installation_id
                ):
                    return dict(installation)
            if len(found) < 100:
                break
        raise OAuthError(
            "not_your_installation", "The installation is not one your GitHub account can access"
        )

    # --- actions ------------------------------------------------------------------------------

    @staticmethod
    def _repo_path(ctx: Ctx, repo: str) -> str:
        return f"/repos/{ctx.config.owner}/{repo}"

    @action("create-issue", description="Open an issue in one of the installation's repositories")
    async def create_issue(self, ctx: Ctx, params: CreateIssue) -> Issue:
        github = await installation_client(ctx)
        issue = await github.call(
            "POST",
            f"{self._repo_path(ctx, params.repo)}/issues",
            json=params.model_dump(exclude={"repo"}, exclude_none=True),
        )
        return _issue(issue)

    @action("comment", description="Comment on an issue or a pull request")
    async def comment(self, ctx: Ctx, params: Comment) -> PostedComment:
        github = await installation_client(ctx)
        posted = await github.call(
            "POST",
            f"{self._repo_path(ctx, params.repo)}/issues/{params.issue_number}/comments",
            json={"body": params.body},
        )
        return PostedComment(id=int(posted["id"]), url=str(posted["html_url"]))

    @action("close-issue", description="Close an issue (as completed, or as not planned)")
    async def close_issue(self, ctx: Ctx, params: CloseIssue) -> Issue:
        github = await installation_client(ctx)
        change = {"state": "closed"}
        if params.reason is not None:
            change["state_reason"] = params.reason
        issue = await github.call(
            "PATCH",
            f"{self._repo_path(ctx, params.repo)}/issues/{params.issue_number}",
            json=change,
        )
        return _issue(issue)

    @action("add-labels", description="Add labels to an issue or a pull request")
    async def add_labels(self, ctx: Ctx, params: AddLabels) -> Labels:
        github = await installation_client(ctx)
        labels = await github.call(
            "POST",
            f"{self._repo_path(ctx, params.repo)}/issues/{params.issue_number}/labels",
            json={"labels": params.labels},
        )
        return _labels(labels)

    @action("remove-label", description="Remove a label from an issue or a pull request")
    async def remove_label(self, ctx: Ctx, params: RemoveLabel) -> Labels:
        github = await installation_client(ctx)
        path = f"{self._repo_path(ctx, params.repo)}/issues/{params.issue_number}/labels"
        labels = await github.call("DELETE", f"{path}/{quote(params.label, safe='')}")
        return _labels(labels)

    @action("merge-pull-request", description="Merge a pull request")
    async def merge_pull_request(self, ctx: Ctx, params: MergePullRequest) -> Merged:
        github = await installation_client(ctx)
        merged = await github.call(
            "PUT",
            f"{self._repo_path(ctx, params.repo)}/pulls/{params.number}/merge",
            json=params.model_dump(exclude={"repo", "number"}, exclude_none=True),
        )
        return Merged(
            sha=str(merged.get("sha")),
            merged=bool(merged.get("merged")),
            message=str(merged.get("message", "")),
        )

    @action("get-installation", description="The App's installation: account, permissions…")
    async def installation(self, ctx: Ctx, params: NoParams) -> Installation:
        found = await get_installation(ctx.http, self.app, ctx.config.installation_id)
        account = found.get("account") or {}
        return Installation(
            id=int(found["id"]),
            owner=str(account.get("login", "")),
            owner_type=str(found.get("target_type") or account.get("type") or ""),
            repository_selection=found.get("repository_selection"),
            permissions=dict(found.get("permissions") or {}),
            events=list(found.get("events") or []),
            html_url=found.get("html_url"),
            suspended_at=found.get("suspended_at"),
        )

    @action("method", description="Call an allowed GitHub REST route as the installation")
    async def method(self, ctx: Ctx, params: MethodCall) -> MethodResult:
        route = params.route.replace("{owner}", ctx.config.owner)
        if "{" in route or "}" in route:
            raise PluginError(
                "the route has a placeholder other than {owner}; write the value instead",
                code="github_route_not_allowed",
            )
        if not _allowed(self.app.allowed_routes(), params.method, route, ctx.config.owner):
            raise PluginError(
                f"{params.method} {params.route} is not allowed here "
                "(METAGOV_GITHUB__METHOD_ALLOWLIST, METAGOV_GITHUB__EXTRA_METHODS)",
                code="github_route_not_allowed",
            )
        github = await installation_client(ctx)
        query = params.method in ("GET", "DELETE")
        response = await github.request(
            params.method,
            route,
            params=params.params if query else None,
            json=None if query else params.params,
        )
        try:
            answer = response.json() if response.content else None
        except ValueError:
            answer = response.text
        return MethodResult(status=response.status_code, response=answer)


def _issue(issue: Any) -> Issue:
    return Issue(number=int(issue["number"]), url=str(issue["html_url"]), state=str(issue["state"]))


def _labels(labels: Any) -> Labels:
    return Labels(labels=[str(label.get("name")) for label in labels or []])


def _allowed(patterns: Sequence[str], method: str, route: str, owner: str) -> bool:
    """Whether ``method route`` matches an allow-list entry: ``{owner}`` only matches the
    installation's account, any other ``{name}`` one path segment."""
    for entry in patterns:
        verb, _, pattern = entry.partition(" ")
        if verb != method:
            continue
        regex = ""
        for part in re.split(r"(\{[a-z_]+\})", pattern.strip()):
            if part == "{owner}":
                regex += f"(?i:{re.escape(owner)})"
            elif part.startswith("{") and part.endswith("}"):
                regex += "[^/]+"
            else:
                regex += re.escape(part)
        if re.fullmatch(regex, route):
            return True
    return False
