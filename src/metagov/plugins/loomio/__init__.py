"""The ``loomio`` plugin: a Loomio group's members, threads and polls, and its webhooks."""

from metagov.plugins.loomio.plugin import LoomioPlugin

plugin = LoomioPlugin

__all__ = ["LoomioPlugin", "plugin"]
