"""Running operations: the engine that wires ``serve`` and ``worker``, workers, kinds, the
handler context, webhooks and retention. Knows nothing of the HTTP server."""
