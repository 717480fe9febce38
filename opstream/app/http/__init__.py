"""The HTTP side: the Starlette application, its resources, SSE framing, problems, auth and
limits. Runs the engine of ``opstream.app.runtime``; the runtime never imports this."""
