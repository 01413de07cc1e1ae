"""`python -m experiments.compare PATH_OR_GROUP`: compare the runs of a sweep."""

from experiments.compare.cli import main
from experiments.runtime.exits import run_command

if __name__ == "__main__":
    run_command(main)  # exits promptly with main's status, whatever W&B's service does
