"""``python -m vigil``: the vigil command (vigil/cli.py)."""
import sys

from vigil.cli import main

sys.exit(main())
