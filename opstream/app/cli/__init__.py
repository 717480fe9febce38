"""The ``opstream`` command line: ``serve``, ``worker`` and ``migrate`` in ``main``; the
client commands registered by ``client_commands`` and run by ``commands`` and ``watching``."""
