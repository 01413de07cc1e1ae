"""`python -m experiments +model=NAME [overrides]`: the thin Hydra entry point."""

from __future__ import annotations

import sys

from experiments.runtime import collection

collection.pause()  # until the heavy imports are done (experiments.runtime.collection)

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from experiments.config.groups import CONF_DIR, conf_dirs, rewrite_shorthand, searchpath_from_args  # noqa: E402
from experiments.config.overrides import unknown_key_error  # noqa: E402
from experiments.config.resolvers import register_resolvers  # noqa: E402
from experiments.run.entry import run  # noqa: E402
from experiments.runtime.exits import run_command  # noqa: E402

register_resolvers()


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def main(cfg: DictConfig) -> float | None:
    """Compose, check, train and evaluate one run; return ``optimized_metric`` for sweepers."""
    return run(cfg)


if __name__ == "__main__":
    # `env.actions=sizing` selects conf/env/actions/sizing.yaml, as `env/actions=sizing` does.
    args = sys.argv[1:]
    sys.argv[1:] = rewrite_shorthand(args, conf_dirs(searchpath_from_args(args)))
    typo = unknown_key_error(sys.argv[1:])  # a key the config lacks: one paragraph, not Hydra's
    if typo is not None:
        print(f"Error: {typo}", file=sys.stderr)
        sys.exit(2)
    run_command(main)  # exits promptly with main's status, whatever W&B's service does
