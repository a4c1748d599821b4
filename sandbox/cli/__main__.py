"""``python -m sandbox.cli`` runs ``sandboxctl``."""

from sandbox.cli import main

main()
