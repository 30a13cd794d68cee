"""``python -m vop.cli``: the ``vop`` command."""

from vop.cli import main

raise SystemExit(main())
