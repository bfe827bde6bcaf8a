"""``benchfake``: a third-party plugin for the benchmark, whose action calls a platform over HTTP.

The bench installs it into the gateway it starts the way a real plugin is installed: a
``metagov_benchfake-1.0.dist-info`` directory with an ``entry_points.txt`` (group
``metagov.plugins``) on the gateway's ``PYTHONPATH`` (see ``bench.procs.plugin_site``). Its
config holds the platform's base URL and an API token (a secret, so it is stored encrypted and
decrypted for each call, as for a real platform plugin).
"""

from __future__ import annotations

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from metagov.plugins.sdk import Plugin, PluginContext, UpstreamError, action


class BenchFakeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    base_url: str = Field(description="The fake platform, e.g. http://127.0.0.1:9000")
    api_token: SecretStr = Field(description="Bearer token the fake platform expects")


class NoParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Thing(BaseModel):
    id: int
    value: int


class BenchFakePlugin(Plugin[BenchFakeConfig]):
    """Reads a thing from the fake platform."""

    name = "benchfake"
    config_model = BenchFakeConfig

    @action("fetch-thing", description="GET /thing on the fake platform")
    async def fetch_thing(self, ctx: PluginContext[BenchFakeConfig], params: NoParams) -> Thing:
        token = ctx.config.api_token.get_secret_value()
        try:
            response = await ctx.http.get(
                f"{ctx.config.base_url}/thing", headers={"Authorization": f"Bearer {token}"}
            )
        except httpx.HTTPError as exc:
            raise UpstreamError(f"fake platform unreachable: {type(exc).__name__}") from None
        if response.status_code != 200:
            raise UpstreamError(f"fake platform answered {response.status_code}")
        return Thing.model_validate(response.json())
