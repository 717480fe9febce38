"""The ``opstream`` command line: ``serve``, ``worker`` and ``migrate`` (``main``), and the
client commands (``client_commands``)."""
