"""Background jobs: the doorbell queue (arq on Redis, or in-process), the job functions, and the
periodic sweep that re-rings whatever a queue forgot. The database stays the source of truth."""
