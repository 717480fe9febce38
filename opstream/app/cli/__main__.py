"""``python -m opstream.app.cli`` runs the ``opstream`` command."""

from opstream.app.cli.main import main

main()
