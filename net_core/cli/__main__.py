"""``python -m net_core.cli``: the same as the ``net`` console script."""

from net_core.cli._main import main

raise SystemExit(main())
