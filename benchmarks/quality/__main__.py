import sys

from benchmarks.quality.run import main

sys.exit(main())
