"""`python -m pruning_core ...`: see pruning_core/cli.py."""

import sys

from .cli import main

sys.exit(main())
