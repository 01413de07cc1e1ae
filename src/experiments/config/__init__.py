"""The run's config before anything runs: where ``conf/`` is, its resolvers, the group
shorthand, and the checks every config passes before torch, Lightning or the data are
touched. Light: imports neither torch nor Lightning."""

from experiments.config.groups import CONF_DIR

__all__ = ["CONF_DIR"]
