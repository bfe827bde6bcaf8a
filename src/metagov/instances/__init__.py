"""Plugin instances: one plugin enabled in one community, with its validated config, encrypted
secrets and state; the context every plugin call gets; running a call on a snapshot and saving
what it did; enabling, re-configuring and disabling; actions; and periodic tasks (``handlers``).
"""
