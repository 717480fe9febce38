"""``python -m opstream`` runs the ``opstream`` command."""

from opstream.app.cli.main import main

main()
