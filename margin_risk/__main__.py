"""Entry point for ``python -m margin_risk``."""

import sys

from margin_risk.tools.cli import main

sys.exit(main())
