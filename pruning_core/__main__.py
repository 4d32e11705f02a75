"""`python -m pruning_core ...`: see pruning_core/cli.py."""

import sys

from pruning_core.infra.cli import main

sys.exit(main())
