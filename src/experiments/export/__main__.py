"""`python -m experiments.export RUN_DIR`: write a verified export/ for a finished run."""

import sys

from experiments.export.bundle import main

if __name__ == "__main__":
    sys.exit(main())
