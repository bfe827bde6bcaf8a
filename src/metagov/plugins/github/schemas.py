"""Settings, config, parameters and outcomes of the GitHub plugin."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

HTTP_METHODS = ("GET", "POST", "PATCH", "PUT", "DELETE")

# What the `method` action may call unless the operator changes it. `{owner}` only matches the
# instance's own account; any other `{name}` matches one path segment.
DEFAULT_METHODS = (
    "GET /installation/repositories",
    "GET /repos/{owner}/{repo}",
    "GET /repos/{owner}/{repo}/collaborators",
    "GET /repos/{owner}/{repo}/contributors",
    "GET /repos/{owner}/{repo}/issues",
    "GET /repos/{owner}/{repo}/issues/{issue_number}",
    "PATCH /repos/{owner}/{repo}/issues/{issue_number}",
    "GET /repos/{owner}/{repo}/issues/{issue_number}/comments",
    "POST /repos/{owner}/{repo}/issues/{issue_number}/comments",
    "GET /repos/{owner}/{repo}/issues/{issue_number}/labels",
    "POST /repos/{owner}/{repo}/issues/{issue_number}/labels",
    "DELETE /repos/{owner}/{repo}/issues/{issue_number}/labels/{name}",
    "GET /repos/{owner}/{repo}/issues/{issue_number}/reactions",
    "POST /repos/{owner}/{repo}/issues/{issue_number}/reactions",
    "GET /repos/{owner}/{repo}/issues/comments/{comment_id}/reactions",
    "GET /repos/{owner}/{repo}/labels",
    "GET /repos/{owner}/{repo}/pulls",
    "GET /repos/{owner}/{repo}/pulls/{pull_number}",
    "GET /repos/{owner}/{repo}/pulls/{pull_number}/reviews",
    "GET /orgs/{owner}/members",
)

_LOGIN = r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})$"
_REPO = r"^[A-Za-z0-9._-]{1,100}$"


def _split(value: Any) -> Any:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


def _check_routes(entries: list[str]) -> list[str]:
    for entry in entries:
        verb, _, path = entry.partition(" ")
        if verb not in HTTP_METHODS or not path.startswith("/") or " " in path.strip():
            raise ValueError(f"{entry!r} is not 'METHOD /path' (METHOD one of {HTTP_METHODS})")
    return entries


class GitHubSettings(BaseSettings):
    """The GitHub App's identity and secrets, shared by every community (``METAGOV_GITHUB__*``).

    Every field has a default so that a gateway that does not use GitHub still loads the plugin;
    what is missing is reported where it is needed.
    """

    model_config = SettingsConfigDict(env_prefix="METAGOV_GITHUB__", extra="ignore")

    app_id: str | None = Field(None, description="The App's ID (the JWT issuer)")
    app_slug: str | None = Field(None, description="The App's URL name: github.com/apps/<slug>")
    private_key: SecretStr | None = Field(None, description="The App's private key, PEM text")
    private_key_file: Path | None = Field(None, description="Or a file holding the PEM")
    webhook_secret: SecretStr | None = None
    client_id: str | None = Field(None, description="Checks who installed, and logs users in")
    client_secret: SecretStr | None = None
    api_url: str = "https://api.github.com"
    web_url: str = "https://github.com"
    method_allowlist: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: list(DEFAULT_METHODS)
    )
    extra_methods: Annotated[list[str], NoDecode] = Field(default_factory=list)

    @field_validator("method_allowlist", "extra_methods", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        return _split(value)

    @field_validator("method_allowlist", "extra_methods")
    @classmethod
    def _routes(cls, value: list[str]) -> list[str]:
        return _check_routes(value)

    @property
    def bot_login(self) -> str | None:
        """The login GitHub gives the App's own comments and reactions."""
        return f"{self.app_slug}[bot]" if self.app_slug else None

    def allowed_routes(self) -> list[str]:
        return [*self.method_allowlist, *self.extra_methods]


def _digits(value: Any) -> Any:
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


InstallationId = Annotated[str, BeforeValidator(_digits), Field(pattern=r"^[1-9][0-9]{0,19}$")]
Repo = Annotated[
    str,
    Field(
        pattern=_REPO,
        description="A repository of the installation's account, by name (`hello-world`)",
        examples=["hello-world"],
    ),
]
IssueNumber = Annotated[int, Field(ge=1, le=2**31)]
Label = Annotated[str, Field(min_length=1, max_length=100)]


class GitHubConfig(BaseModel):
    """A community's installation of the App, written by the install (or by hand)."""

    model_config = ConfigDict(extra="forbid")

    installation_id: InstallationId = Field(description="The App installation's id")
    owner: str = Field(pattern=_LOGIN, description="The account the App is installed on")
    owner_type: Literal["User", "Organization"] | None = None
    installation_token: SecretStr | None = Field(
        None, description="Minted by the plugin from the App's key; renewed before it expires"
    )


class CreateIssue(BaseModel):
    model_config = ConfigDict(extra="forbid")

    repo: Repo
    title: str = Field(min_length=1, max_length=256)
    body: str | None = Field(None, max_length=65536)
    labels: list[Label] | None = Field(None, max_length=100)
    assignees: list[Annotated[str, Field(pattern=_LOGIN)]] | None = Field(None, max_length=10)


class Issue(BaseModel):
    number: int
    url: str = Field(description="The issue's page on GitHub")
    state: str


class Comment(BaseModel):
    model_config = ConfigDict(extra="forbid")

    repo: Repo
    issue_number: IssueNumber = Field(description="An issue or a pull request")
    body: str = Field(min_length=1, max_length=65536)


class PostedComment(BaseModel):
    id: int
    url: str


class CloseIssue(BaseModel):
    model_config = ConfigDict(extra="forbid")

    repo: Repo
    issue_number: IssueNumber
    reason: Literal["completed", "not_planned"] | None = None


class AddLabels(BaseModel):
    model_config = ConfigDict(extra="forbid")

    repo: Repo
    issue_number: IssueNumber
    labels: list[Label] = Field(min_length=1, max_length=100)


class RemoveLabel(BaseModel):
    model_config = ConfigDict(extra="forbid")

    repo: Repo
    issue_number: IssueNumber
    label: Label


class Labels(BaseModel):
    labels: list[str] = Field(description="The issue's labels afterwards")


class MergePullRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    repo: Repo
    number: IssueNumber
    merge_method: Literal["merge", "squash", "rebase"] | None = None
    commit_title: str | None = Field(None, max_length=256)
    commit_message: str | None = Field(None, max_length=65536)
    sha: str | None = Field(
        None, pattern=r"^[0-9a-f]{40}$", description="Merge only if the head is still this commit"
    )


class Merged(BaseModel):
    sha: str
    merged: bool
    message: str


class NoParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Installation(BaseModel):
    id: int
    owner: str
    owner_type: str
    repository_selection: str | None = None
    permissions: dict[str, str] = Field(default_factory=dict)
    events: list[str] = Field(default_factory=list)
    html_url: str | None = None
    suspended_at: str | None = None


# An encoded separator could smuggle another route past the allow-list.
_SNEAKY = re.compile(r"%(2f|2e|25|5c)", re.IGNORECASE)
_ROUTE = re.compile(r"^/[A-Za-z0-9._~{}%@+,:=-]+(/[A-Za-z0-9._~{}%@+,:=-]+)*$")


class MethodCall(BaseModel):
    model_config = ConfigDict(extra="forbid")

    route: str = Field(
        max_length=500,
        description="A REST route; `{owner}` is replaced by the installation's account",
        examples=["/repos/{owner}/hello-world/issues"],
    )
    method: Literal["GET", "POST", "PATCH", "PUT", "DELETE"] = "GET"
    params: dict[str, Any] = Field(
        default_factory=dict, description="Query parameters for GET and DELETE, else the body"
    )

    @field_validator("route")
    @classmethod
    def _plain_path(cls, value: str) -> str:
        if not _ROUTE.match(value) or any(p in (".", "..") for p in value.split("/")):
            raise ValueError("give a path such as /repos/{owner}/hello-world/issues")
        if _SNEAKY.search(value):
            raise ValueError("the route cannot encode '/', '.', '%' or '\\'")
        return value

    @field_validator("params")
    @classmethod
    def _no_token(cls, value: dict[str, Any]) -> dict[str, Any]:
        if "access_token" in value:
            raise ValueError("params cannot set a token; the installation's token is used")
        return value


class MethodResult(BaseModel):
    status: int
    response: Any = None


# --- votes -----------------------------------------------------------------------------------


class VoteParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    repo: Repo
    question: str = Field(min_length=1, max_length=256, description="The issue's title")
    help_text: str | None = Field(None, max_length=60000, description="Above the instructions")
    max_votes: int | None = Field(None, ge=1, le=100000, description="Close after this many")
    closing_at: AwareDatetime | None = Field(None, description="Close at this time (with a zone)")


class ReactVoteParams(VoteParams):
    pass


class CommentVoteParams(VoteParams):
    options: list[Annotated[str, Field(min_length=1, max_length=100)]] = Field(
        min_length=2, max_length=20
    )

    @field_validator("options")
    @classmethod
    def _distinct(cls, value: list[str]) -> list[str]:
        cleaned = [" ".join(option.split()) for option in value]
        if any(not option for option in cleaned):
            raise ValueError("an option cannot be blank")
        if len({option.casefold() for option in cleaned}) != len(cleaned):
            raise ValueError("options must be distinct (ignoring case)")
        return cleaned


class OptionVotes(BaseModel):
    count: int
    users: list[str]


class ReactVoteOutcome(BaseModel):
    issue_number: int
    url: str
    votes: dict[str, OptionVotes] = Field(description="`yes` (👍) and `no` (👎)")
    result: Literal["pass", "fail", "tie"]


class CommentVoteOutcome(BaseModel):
    issue_number: int
    url: str
    votes: dict[str, OptionVotes]
    result: str | None = Field(description="The leading option; null with no votes or a tie")
