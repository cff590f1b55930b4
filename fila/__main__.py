"""``python -m fila``: the demo (see :mod:`fila.demo`)."""

from .demo import main

raise SystemExit(main())
