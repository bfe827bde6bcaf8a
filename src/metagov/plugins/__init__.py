"""Plugins: the SDK (``sdk``), the registry that loads them, and one package per platform."""
