"""The env factory the run hands to agents: the configured env over spans of one market.

``hydra.utils.instantiate(cfg.env)`` returns the env plug-in as a ``functools.partial`` (the
env group sets ``_partial_: true``); :class:`EnvFactory` binds it to the run's market and
builds the training, validation and evaluation envs from it::

    factory = EnvFactory(hydra.utils.instantiate(cfg.env), data.market)
    train = factory(data.split.train, num_envs=64, device="cuda", seed=0)
    test = factory(data.split.test, num_envs=1, evaluation=True)

A light module: importing it does not import torch (the env class is imported by Hydra when
the config is instantiated).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from datamodules.errors import ConfigError

if TYPE_CHECKING:
    import torch

    from datamodules.market import Market
    from envs.protocol import TradingEnvLike

DEFAULT_AUTO_ENVS_CAP = 1024  # the most envs num_envs=auto picks, unless the env config says


class EnvFactory:
    """The configured env over spans of one market.

    ``build`` is the env plug-in, usually ``functools.partial(TradingEnv, **cfg.env)`` as
    ``hydra.utils.instantiate(cfg.env)`` returns it; it is called as
    ``build(market, span, num_envs=..., device=..., seed=..., evaluation=...)``.
    """

    def __init__(self, build: Callable[..., TradingEnvLike], market: Market) -> None:
        if not callable(build):
            raise ConfigError(
                f"The env config built {build!r}, not an env class: the env group needs "
                "`_target_: envs.trading.TradingEnv` (or your own env) and `_partial_: true`."
            )
        self.build = build
        self.market = market

    def _keyword(self, name: str, default: Any) -> Any:
        if isinstance(self.build, functools.partial):
            return self.build.keywords.get(name, default)
        return default

    @property
    def requested_num_envs(self) -> int | str:
        """The configured ``num_envs`` (an int, or ``"auto"`` for the caller to resolve)."""
        value = self._keyword("num_envs", 1)
        return value if isinstance(value, str) else int(value)

    @property
    def auto_envs_cap(self) -> int:
        """The most envs ``num_envs=auto`` may pick (``env.auto_envs_cap``)."""
        return int(self._keyword("auto_envs_cap", DEFAULT_AUTO_ENVS_CAP))

    def __call__(
        self,
        span: tuple[int, int] | Sequence[tuple[int, int]],
        *,
        num_envs: int | None = None,
        device: torch.device | str = "cpu",
        seed: int = 0,
        evaluation: bool = False,
    ) -> TradingEnvLike:
        """An env over bars ``span`` of the market (one ``(start, stop)`` or several in time
        order, episodes never crossing from one into the next): ``num_envs`` envs (None = the
        configured number, which must then be a number), on ``device``, seeded by ``seed``;
        ``evaluation=True`` for the deterministic evaluation env."""
        if num_envs is None:
            num_envs = self.requested_num_envs
            if isinstance(num_envs, str):
                raise ConfigError(
                    f"env.num_envs is '{num_envs}': resolve it to a number of envs (at most "
                    f"env.auto_envs_cap = {self.auto_envs_cap}) and pass num_envs= to the factory."
                )
        return self.build(
            self.market,
            tuple(tuple(s) for s in span) if isinstance(span[0], (tuple, list)) else tuple(span),
            num_envs=num_envs,
            device=device,
            seed=seed,
            evaluation=evaluation,
        )
