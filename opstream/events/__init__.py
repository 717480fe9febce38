"""The domain and its storage: events, the fold into operations, stores, fan-out, catch-up.

Nothing in this package knows about HTTP.
"""
