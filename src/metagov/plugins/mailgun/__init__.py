"""The ``mailgun`` plugin: send email through a community's Mailgun domain."""

from metagov.plugins.mailgun.plugin import MailgunPlugin

plugin = MailgunPlugin

__all__ = ["MailgunPlugin", "plugin"]
