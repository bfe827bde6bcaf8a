"""Plugins used only by the tests, registered exactly like real ones.

``echo`` has a secret and a platform id (so a community can hold several instances); its
processes cover the hooks the randomness plugin does not use.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from metagov.jobs.queue import Job
from metagov.plugins.sdk import (
    AuthType,
    GovernanceProcess,
    Plugin,
    PluginContext,
    PluginError,
    ProcessContext,
    action,
    task,
)


class EchoConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    team_id: str = Field(min_length=1)
    api_token: SecretStr
    greeting: str = "hello"


class SayParams(BaseModel):
    text: str = Field(max_length=1000)


class Said(BaseModel):
    text: str
    team_id: str
    token_length: int


class Counter(BaseModel):
    count: int


class Empty(BaseModel):
    pass


class ApprovalParams(BaseModel):
    question: str
    fail_on_start: bool = False


class ApprovalOutcome(BaseModel):
    approvals: int
    closed_by: str | None = None


EchoCtx = PluginContext[EchoConfig]


class Approval(GovernanceProcess[EchoConfig, ApprovalParams, ApprovalOutcome]):
    """Counts one approval per update tick; closing records who closed it."""

    slug = "approval"
    params_model = ApprovalParams
    outcome_model = ApprovalOutcome
    update_interval = timedelta(seconds=30)

    async def start(
        self, ctx: ProcessContext[EchoConfig, ApprovalOutcome], params: ApprovalParams
    ) -> None:
        if params.fail_on_start:
            raise PluginError("the platform refused to create the vote")
        ctx.url = f"https://echo.example/{ctx.config.team_id}/votes/{ctx.process_id}"
        ctx.set_outcome(ApprovalOutcome(approvals=0))

    async def update(
        self, ctx: ProcessContext[EchoConfig, ApprovalOutcome], params: ApprovalParams
    ) -> None:
        approvals = ctx.outcome.approvals if ctx.outcome else 0
        ctx.set_outcome(ApprovalOutcome(approvals=approvals + 1))
        ctx.process_state.set("ticks", ctx.process_state.get("ticks", 0) + 1)

    async def close(
        self, ctx: ProcessContext[EchoConfig, ApprovalOutcome], params: ApprovalParams
    ) -> None:
        if params.question == "explode":
            raise RuntimeError("platform went away")
        approvals = ctx.outcome.approvals if ctx.outcome else 0
        ctx.complete(ApprovalOutcome(approvals=approvals, closed_by="driver"))


class PlatformPoll(GovernanceProcess[EchoConfig, Empty, Counter]):
    """Ends only on the platform: the Driver cannot close it early."""

    slug = "platform-poll"
    params_model = Empty
    outcome_model = Counter
    closable = False

    async def start(self, ctx: ProcessContext[EchoConfig, Counter], params: Empty) -> None:
        ctx.set_outcome(Counter(count=0))


class EchoPlugin(Plugin[EchoConfig]):
    """Test plugin with a secret token and a platform id."""

    name = "echo"
    auth_type = AuthType.API_KEY
    config_model = EchoConfig
    community_platform_id_field = "team_id"
    processes = (Approval, PlatformPoll)

    async def initialize(self, ctx: EchoCtx) -> None:
        if ctx.config.greeting == "refuse":
            raise PluginError("the platform rejected this token")
        ctx.state.set("initialized", ctx.state.get("initialized", 0) + 1)

    @action("say", description="Echo the text back", public=True)
    async def say(self, ctx: EchoCtx, params: SayParams) -> Said:
        ctx.log.info("saying %s", params.text)
        return Said(
            text=f"{ctx.config.greeting} {params.text}",
            team_id=ctx.config.team_id,
            token_length=len(ctx.config.api_token.get_secret_value()),
        )

    @action("count", description="Count calls in the instance state")
    async def count(self, ctx: EchoCtx, params: Empty) -> Counter:
        value = int(ctx.state.get("count", 0)) + 1
        ctx.state.set("count", value)
        return Counter(count=value)

    @task(every=timedelta(minutes=5))
    async def tick(self, ctx: EchoCtx) -> None:
        """Counts its runs; fails for the team named "broken", which must not stop the others."""
        if ctx.config.team_id == "broken":
            raise RuntimeError("the platform is down")
        ctx.state.set("ticks", ctx.state.get("ticks", 0) + 1)

    @action("forget", description="Returns nothing")
    async def forget(self, ctx: EchoCtx, params: Empty) -> None:
        ctx.state.delete("count")


FAKE_PLUGINS = (EchoPlugin,)


class RecordingQueue:
    """A job queue that runs nothing and remembers what was rung, to tell which work a job did
    itself and which it left to another job."""

    def __init__(self) -> None:
        self.jobs: list[Job] = []

    async def enqueue(self, job: Job) -> None:
        self.jobs.append(job)

    async def enqueue_many(self, jobs: Sequence[Job]) -> None:
        self.jobs.extend(jobs)

    async def close(self) -> None:
        return None
