"""The SourceCred plugin: the cred scores a community's SourceCred instance publishes.

SourceCred has no API: an instance computes scores and publishes them as files (usually on
GitHub Pages). The plugin reads the instance's output (see :mod:`.output`), keeps the scores for
``cache_seconds``, and answers two public actions, so a bot or a web page can ask without a
Driver key: ``user-cred`` and ``total-cred``.
"""

from __future__ import annotations

from metagov.plugins.sdk import Plugin, PluginContext, PluginError, action
from metagov.plugins.sourcecred.output import FILES, ScoreCache, Scores, read_scores
from metagov.plugins.sourcecred.schemas import (
    CredValue,
    NoParams,
    SourceCredConfig,
    SourceCredSettings,
    UserCredParams,
    check_reachable_safely,
)

Ctx = PluginContext[SourceCredConfig]


class UnknownUser(PluginError):
    status_code = 404
    code = "unknown_user"


class SourceCredPlugin(Plugin[SourceCredConfig]):
    """SourceCred instances: a user's cred and the community's total, read from the output the
    instance publishes."""

    name = "sourcecred"
    calls_configured_urls = True  # the community names its server
    config_model = SourceCredConfig
    community_platform_id_field = "server_url"
    settings_model = SourceCredSettings

    def __init__(self) -> None:
        self._scores = ScoreCache()

    @property
    def rules(self) -> SourceCredSettings:
        settings: SourceCredSettings = self.settings
        return settings

    async def initialize(self, ctx: Ctx) -> None:
        """Refuse a URL that publishes no SourceCred output (the read primes the cache)."""
        check_reachable_safely(ctx.config.server_url, self.rules)
        await self._read(ctx)

    async def _read(self, ctx: Ctx) -> Scores:
        config = ctx.config
        key = f"{config.output}:{config.server_url}"
        paths = FILES[config.output]
        known = self._scores.found.get(key)
        if known in paths:  # where this instance's output was last found: ask there first
            paths = (known, *(p for p in paths if p != known))

        async def load() -> Scores:
            scores = await read_scores(ctx.http, config.server_url, paths, self.rules.max_bytes)
            self._scores.found[key] = scores.source
            return scores

        return await self._scores.get(key, config.cache_seconds, load)

    @action(
        "user-cred",
        description="A user's cred, by SourceCred name, platform account id or alias",
        public=True,
    )
    async def user_cred(self, ctx: Ctx, params: UserCredParams) -> CredValue:
        scores = await self._read(ctx)
        value = scores.find(username=params.username, id=params.id, alias=params.alias)
        if value is None:
            if params.username is not None:
                who = f"no identity named {params.username!r}"
            elif params.id is not None:
                who = f"no alias with id {params.id!r}"
            else:
                who = "no such alias"
            raise UnknownUser(f"{who} in the SourceCred instance at {ctx.config.server_url}")
        return CredValue(value=value)

    @action("total-cred", description="The cred of all the instance's identities", public=True)
    async def total_cred(self, ctx: Ctx, params: NoParams) -> CredValue:
        return CredValue(value=(await self._read(ctx)).total)
