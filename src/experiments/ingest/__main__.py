"""`python -m experiments.ingest SOURCE --to URI`: load bars into a database table."""

from experiments.ingest.cli import main
from experiments.runtime.exits import run_command

if __name__ == "__main__":
    run_command(main)  # exits promptly with main's status, whatever W&B's service does
