"""`python -m gradc ...`: the `gradc` command (gradc/cli.py)."""
import sys

from .cli import main

sys.exit(main())
