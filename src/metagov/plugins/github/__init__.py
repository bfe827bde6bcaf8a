"""The ``github`` plugin: a GitHub App installed per community, signed webhooks, issue and pull
request actions, and votes held in issues."""

from metagov.plugins.github.plugin import GitHubPlugin

plugin = GitHubPlugin

__all__ = ["GitHubPlugin", "plugin"]
