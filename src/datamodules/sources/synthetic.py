"""The synthetic source: a deterministic market per seed, any ticker names, offline.

NOT real data: runs on it are tagged ``synthetic``. The generator is
:func:`datamodules.synthetic.generate_bars`; its knobs are ``data.synthetic.*``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, ClassVar

from datamodules.bars import bar_minutes
from datamodules.config import dataclass_from
from datamodules.errors import ConfigError
from datamodules.sources.base import BarSource
from datamodules.synthetic import SyntheticConfig, check_correlation, generate_bars

if TYPE_CHECKING:
    import polars as pl


@dataclass(frozen=True, kw_only=True)
class SyntheticSource(BarSource):
    """Correlated, fat-tailed, regime-switching bars at ``bar_size``, identical per ``seed``.

    ``seed`` of the generator (a whole number >= 0); ``synthetic`` its knobs (see
    :class:`~datamodules.synthetic.SyntheticConfig`: sessions in days, volatilities and
    drift as annual fractions, volume in shares). Sessions are business days, so
    ``sessions_per_year`` defaults to 252.
    """

    seed: int = 0
    sessions_per_year: float | None = 252.0
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)

    name: ClassVar[str] = "synthetic"
    is_synthetic: ClassVar[bool] = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"data.seed is {self.seed!r}; it must be a whole number >= 0.")
        synth = dataclass_from(SyntheticConfig, self.synthetic, "data.synthetic")
        object.__setattr__(self, "synthetic", synth)
        check_correlation(synth.correlation, len(self.tickers))

    def load(self) -> pl.DataFrame:
        return generate_bars(self.tickers, bar_minutes(self.bar_size), self.seed, self.synthetic)

    def fingerprint(self) -> dict:
        return {
            "seed": self.seed,
            "bar_minutes": bar_minutes(self.bar_size),
            "synthetic": asdict(self.synthetic),
        }
