"""The TSC plugin: read-only access to a community's TSC agreement server (users, contracts,
their executions and agreements), each record passed to the Driver as the server sent it."""

from __future__ import annotations

from metagov.plugins.sdk import Plugin, PluginContext, action
from metagov.plugins.tsc.client import get_record
from metagov.plugins.tsc.schemas import (
    AgreementId,
    ContractId,
    ExecutionId,
    TscConfig,
    TscRecord,
    UserId,
)

Ctx = PluginContext[TscConfig]


async def _read(ctx: Ctx, kind: str, record_id: str) -> TscRecord:
    return TscRecord.model_validate(
        await get_record(ctx.http, ctx.config.server_url, kind, record_id)
    )


class TscPlugin(Plugin[TscConfig]):
    """A TSC agreement server: users, contracts, executions and agreements."""

    name = "tsc"
    calls_configured_urls = True  # the community names its server
    config_model = TscConfig

    @action("get-user", description="A user of the TSC server")
    async def get_user(self, ctx: Ctx, params: UserId) -> TscRecord:
        return await _read(ctx, "user", params.user_id)

    @action("get-contract", description="A contract of the TSC server")
    async def get_contract(self, ctx: Ctx, params: ContractId) -> TscRecord:
        return await _read(ctx, "contract", params.contract_id)

    @action("get-execution", description="An execution of a contract on the TSC server")
    async def get_execution(self, ctx: Ctx, params: ExecutionId) -> TscRecord:
        return await _read(ctx, "execution", params.execution_id)

    @action("get-agreement", description="An agreement of the TSC server")
    async def get_agreement(self, ctx: Ctx, params: AgreementId) -> TscRecord:
        return await _read(ctx, "agreement", params.agreement_id)
