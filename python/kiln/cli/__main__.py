"""``python -m kiln.cli``: the ``kiln`` command (how tests and :class:`~kiln.testing.LocalCluster` start it)."""

import sys

from kiln.cli.app import main

sys.exit(main())
