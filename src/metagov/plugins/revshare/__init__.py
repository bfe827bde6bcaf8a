"""The ``revshare`` plugin: weighted payment pointers for Web Monetization revenue sharing."""

from metagov.plugins.revshare.plugin import RevSharePlugin

plugin = RevSharePlugin

__all__ = ["RevSharePlugin", "plugin"]
