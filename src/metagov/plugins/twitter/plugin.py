"""``twitter``: the original Twitter plugin's actions (``send-tweet``, ``send-dm``,
``get-user-id``) on the X plugin's implementation: the same OAuth install (at
``/auth/twitter/authorize``), config, credential renewal and mention events. A community enables
``twitter`` or ``x``; new Drivers should use ``x``."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from metagov.plugins.sdk import PluginContext, action
from metagov.plugins.x.plugin import XBase, direct_message, lookup, publish
from metagov.plugins.x.schemas import (
    DmSent,
    GetUserParams,
    Posted,
    PostParams,
    SendDmParams,
    UserId,
    UserIdResult,
    XConfig,
)

Ctx = PluginContext[XConfig]


class SendTweetParams(BaseModel):
    """The original ``send-tweet`` took only the text."""

    model_config = ConfigDict(extra="forbid")

    text: str = Field(min_length=1, max_length=25000)


class TwitterDmParams(BaseModel):
    """The original ``send-dm`` took the recipient's id and the text."""

    model_config = ConfigDict(extra="forbid")

    user_id: UserId
    text: str = Field(min_length=1, max_length=10000)


class TwitterPlugin(XBase):
    """Twitter, by its original name: the X plugin under the original action names."""

    name = "twitter"

    @action("send-tweet", description="Post as the community's account (if allow_posting is on)")
    async def send_tweet(self, ctx: Ctx, params: SendTweetParams) -> Posted:
        return await publish(ctx, PostParams(text=params.text))

    @action("send-dm", description="Send a direct message to a user id")
    async def send_dm(self, ctx: Ctx, params: TwitterDmParams) -> DmSent:
        return await direct_message(ctx, SendDmParams(user_id=params.user_id, text=params.text))

    @action("get-user-id", description="The id of the user with this username (screen_name)")
    async def get_user_id(self, ctx: Ctx, params: GetUserParams) -> UserIdResult:
        return UserIdResult(user_id=(await lookup(ctx, params.username)).id)
