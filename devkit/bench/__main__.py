"""`python -m devkit.bench`: see the package docstring."""

import sys

from devkit.bench.runner import main

sys.exit(main())
