"""Everything that talks to the outside: HTTP, SSE, workers, handlers, the command line."""
