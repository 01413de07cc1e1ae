"""``python -m experiments.compare``: tables, intervals and plots of the runs of a sweep, read
from their offline W&B files or from the W&B API."""
