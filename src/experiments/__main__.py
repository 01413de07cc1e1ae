"""`python -m experiments +model=NAME [overrides]`: the thin Hydra entry point."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from experiments.app import CONF_DIR, register_resolvers, run

register_resolvers()


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def main(cfg: DictConfig) -> float | None:
    """Compose, train and evaluate one run; return ``optimized_metric`` for sweepers."""
    return run(cfg)


if __name__ == "__main__":
    main()
