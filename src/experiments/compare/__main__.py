"""`python -m experiments.compare PATH_OR_GROUP`: compare the runs of a sweep."""

from experiments.runtime import collection

collection.pause()  # until the imports below are done (experiments.runtime.collection)

from experiments.compare.cli import main  # noqa: E402
from experiments.runtime.exits import run_command  # noqa: E402

collection.resume()

if __name__ == "__main__":
    run_command(main)  # exits promptly with main's status, whatever W&B's service does
