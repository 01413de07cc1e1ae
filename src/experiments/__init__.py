"""The Hydra app: compose a run from config groups, train, evaluate, log, compare."""
