"""Governance processes (votes, mostly): starting, reading and closing them, running their hooks
outside any transaction under a lease (``service``), the status rules (``lifecycle``), and the
scheduler's jobs for deadlines and updates (``handlers``).
"""
