"""The HTTP API: thin routes that parse, authorize, call one service function and shape the reply."""
