"""`python -m experiments.compare PATH_OR_GROUP`: compare the runs of a sweep."""

from experiments.compare.cli import main

if __name__ == "__main__":
    main()
