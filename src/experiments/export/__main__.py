"""`python -m experiments.export RUN_DIR`: write a verified export/ for a finished run."""

from experiments.export.bundle import main
from experiments.runtime.exits import run_command

if __name__ == "__main__":
    run_command(main)  # exits promptly with main's status, whatever W&B's service does
