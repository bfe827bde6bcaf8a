"""The generic ``webhook`` plugin: signed webhooks from any platform become Driver events."""

from metagov.plugins.webhook.plugin import WebhookPlugin

plugin = WebhookPlugin

__all__ = ["WebhookPlugin", "plugin"]
