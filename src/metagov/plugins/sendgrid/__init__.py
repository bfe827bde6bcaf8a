"""The ``sendgrid`` plugin: send email with a community's own SendGrid API key."""

from metagov.plugins.sendgrid.plugin import SendGridPlugin

plugin = SendGridPlugin

__all__ = ["SendGridPlugin", "plugin"]
