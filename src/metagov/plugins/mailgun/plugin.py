"""The Mailgun plugin: each community sends email from its own Mailgun domain, with its own API
key (a secret, stored encrypted), in the US or EU region.

Nothing is checked against Mailgun when the plugin is enabled (no request leaves the gateway
then): a wrong key or domain shows at the first ``send-mail``, as a 400 naming Mailgun's answer.
"""

from __future__ import annotations

from metagov.plugins.mailgun.client import MailgunClient
from metagov.plugins.mailgun.schemas import (
    REGION_URLS,
    MailgunConfig,
    MailgunSettings,
    MailSent,
    SendMail,
)
from metagov.plugins.sdk import AuthType, Plugin, PluginContext, PluginError, action

Ctx = PluginContext[MailgunConfig]


class MailgunPlugin(Plugin[MailgunConfig]):
    """Email through Mailgun, from the community's own sending domain."""

    name = "mailgun"
    auth_type = AuthType.API_KEY
    config_model = MailgunConfig
    settings_model = MailgunSettings

    def _api_url(self, config: MailgunConfig) -> str:
        settings: MailgunSettings | None = self.settings
        if settings is not None and settings.api_url:
            return settings.api_url
        return REGION_URLS[config.region]

    @action("send-mail", description="Send an email from the community's Mailgun domain")
    async def send_mail(self, ctx: Ctx, params: SendMail) -> MailSent:
        config = ctx.config
        sender = params.from_ or config.default_from
        if sender is None:
            raise PluginError(
                "give `from`: the mailgun config has no default_from", code="mailgun_no_sender"
            )
        form = [("from", sender), *(("to", to) for to in params.recipients())]
        form.append(("subject", params.subject))
        if params.text is not None:
            form.append(("text", params.text))
        if params.html is not None:
            form.append(("html", params.html))
        if params.reply_to is not None:
            form.append(("h:Reply-To", params.reply_to))
        if config.test_mode:
            form.append(("o:testmode", "yes"))
        client = MailgunClient(
            ctx.http, self._api_url(config), config.domain, config.api_key.get_secret_value()
        )
        answer = await client.send(form)
        return MailSent(
            id=str(answer["id"]) if answer.get("id") else None,
            message=str(answer.get("message", "")),
        )
