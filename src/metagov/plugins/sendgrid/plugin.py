"""The SendGrid plugin: each community sends email with its own SendGrid API key (a secret,
stored encrypted) instead of one key shared by every community.

Nothing is checked against SendGrid when the plugin is enabled (no request leaves the gateway
then): a wrong key or an unverified sender shows at the first ``send-mail``, as a 400 naming
SendGrid's answer.
"""

from __future__ import annotations

from typing import Any

from metagov.plugins.sdk import AuthType, Plugin, PluginContext, PluginError, action
from metagov.plugins.sendgrid.client import SendGridClient
from metagov.plugins.sendgrid.schemas import (
    MailSent,
    SendGridConfig,
    SendGridSettings,
    SendMail,
    split_address,
)

Ctx = PluginContext[SendGridConfig]


class SendGridPlugin(Plugin[SendGridConfig]):
    """Email through SendGrid, with the community's own API key."""

    name = "sendgrid"
    auth_type = AuthType.API_KEY
    config_model = SendGridConfig
    settings_model = SendGridSettings

    @action("send-mail", description="Send an email with the community's SendGrid key")
    async def send_mail(self, ctx: Ctx, params: SendMail) -> MailSent:
        config = ctx.config
        sender = params.from_ or config.default_from
        if sender is None:
            raise PluginError(
                "give `from`: the sendgrid config has no default_from", code="sendgrid_no_sender"
            )
        content = []  # SendGrid wants text/plain before text/html
        if params.text is not None:
            content.append({"type": "text/plain", "value": params.text})
        if params.html is not None:
            content.append({"type": "text/html", "value": params.html})
        message: dict[str, Any] = {
            "personalizations": [{"to": [split_address(to) for to in params.recipients()]}],
            "from": split_address(sender),
            "subject": params.subject,
            "content": content,
        }
        if params.reply_to is not None:
            message["reply_to"] = split_address(params.reply_to)
        if config.sandbox_mode:
            message["mail_settings"] = {"sandbox_mode": {"enable": True}}
        settings: SendGridSettings = self.settings or SendGridSettings()
        client = SendGridClient(ctx.http, settings.api_url, config.api_key.get_secret_value())
        message_id = await client.send(message)
        return MailSent(id=message_id, message="Accepted")
