"""The ``near`` plugin: view and call a NEAR smart contract as the community's account."""

from metagov.plugins.near.plugin import NearPlugin

plugin = NearPlugin

__all__ = ["NearPlugin", "plugin"]
