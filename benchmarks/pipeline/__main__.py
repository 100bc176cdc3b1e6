"""``python -m benchmarks.pipeline``: see benchmarks/pipeline/__init__.py."""
import sys

from benchmarks.pipeline.run import main

sys.exit(main())
