"""``python -m fila``: the command line, the same as the ``fila-py`` console script (see :mod:`fila.cli`)."""

from .cli import main

raise SystemExit(main(prog="python -m fila"))
