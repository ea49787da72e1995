"""llada serve: one engine behind an OpenAI-style HTTP API, and the client for --server."""
