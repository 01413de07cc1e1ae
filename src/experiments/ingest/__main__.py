"""`python -m experiments.ingest SOURCE --to URI`: load bars into a database table."""

from experiments.runtime import collection

collection.pause()  # until the imports below are done (experiments.runtime.collection)

from experiments.ingest.cli import main  # noqa: E402
from experiments.runtime.exits import run_command  # noqa: E402

collection.resume()

if __name__ == "__main__":
    run_command(main)  # exits promptly with main's status, whatever W&B's service does
