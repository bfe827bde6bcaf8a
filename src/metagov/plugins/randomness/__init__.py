"""The ``randomness`` plugin: needs no platform, and is the worked example for plugin authors."""

from metagov.plugins.randomness.plugin import RandomnessPlugin

plugin = RandomnessPlugin

__all__ = ["RandomnessPlugin", "plugin"]
