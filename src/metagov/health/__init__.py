"""Operational health: workers' heartbeats, and the checks behind ``metagov doctor``."""
