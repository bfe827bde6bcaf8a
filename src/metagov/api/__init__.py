"""The HTTP API: thin routes that parse, authorize, call one service and shape the reply."""
