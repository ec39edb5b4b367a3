"""`python -m shared.cli`: the same as the `autopilot` command."""

import sys

from shared.cli.main import main

sys.exit(main())
