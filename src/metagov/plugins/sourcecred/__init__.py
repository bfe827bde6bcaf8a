"""The ``sourcecred`` plugin: a SourceCred instance's cred scores, as public actions."""

from metagov.plugins.sourcecred.plugin import SourceCredPlugin

plugin = SourceCredPlugin

__all__ = ["SourceCredPlugin", "plugin"]
