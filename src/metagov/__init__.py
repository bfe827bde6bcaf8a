"""Metagov: a governance gateway between Drivers and community platforms."""

__version__ = "0.1.0"
