"""Metagov's benchmark: ``python -m bench`` (or ``python -m bench --quick``).

It starts everything it measures as loopback subprocesses (the gateway on PostgreSQL + Redis with
one worker, the gateway in the embedded SQLite mode, a bare Starlette baseline, a fake platform and
a Driver receiver), drives them from this process, prints one table and writes
``bench/results/<timestamp>.json``. See docs/benchmarks.md.
"""
