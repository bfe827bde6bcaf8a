"""The operator console at ``/console``: server-rendered pages to see what is stuck in the
gateway (deliveries, dead letters, the inbox, processes) and repair it through the same services
as the API and the CLI, each change written to an audit log."""
