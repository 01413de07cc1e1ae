"""Comparing W&B runs: which config keys differ, per-configuration mean ± std over seeds, and a
bootstrap confidence interval of the difference between the best two configurations.

Pure functions on plain dicts and polars frames; ``experiments.compare`` reads the runs and
prints, writes and plots what these return.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

# Keys that only seed a run or pick its cross-validation fold: runs differing by these alone
# are one configuration (its seeds, or its walk-forward / CPCV folds).
SEED_KEYS = ("seed", "data.seed", "data.split.fold")
# Keys (and key prefixes) that say where or how loudly a run went, not what it computed.
IGNORED = (
    "_wandb",
    "overrides",
    "paths",
    "hydra",
    "logger",
    "print_config",
    "quiet",
    "tags",
    "resume",
    "task_name",
)
# Last key components naming folders (``data.cache_dir``...): never part of a configuration.
FOLDER_SUFFIXES = ("_dir", "dirpath")
# Shown after the chosen metric when some run logged them.
STANDARD_METRICS = ("test/sharpe", "test/total_return", "test/max_drawdown")
MEAN, STD = " mean", " std"
# Beyond this many differing keys the printed table shows one compact configuration column.
MAX_KEY_COLUMNS = 6


@dataclass
class RunRecord:
    """One W&B run as read from its offline files or from the W&B API."""

    run_id: str
    name: str
    config: dict[str, Any]  # flattened: dotted keys -> scalars (lists as JSON text)
    summary: dict[str, Any]  # final values: metric name -> number
    history: list[dict[str, Any]] = field(default_factory=list)  # logged rows, in order
    group: str = ""
    job_type: str = ""
    state: str = ""
    folder: Path | None = None  # the run folder (W&B save_dir), None for online runs
    # Online runs: download one of the run's W&B files (a logged table) and return its path.
    fetch_file: Callable[[str], Path | None] | None = None


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts become dotted keys; lists become compact JSON text, other values stay."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        elif isinstance(value, (list, tuple)):
            flat[name] = json.dumps(value, separators=(",", ":"), default=str)
        else:
            flat[name] = value
    return flat


def is_ignored(key: str) -> bool:
    """True for keys that never describe a configuration (paths, W&B settings, overrides)."""
    if any(key == k or key.startswith(f"{k}.") for k in IGNORED):
        return True
    return key.rsplit(".", 1)[-1].endswith(FOLDER_SUFFIXES)


def value_text(value: Any) -> str | None:
    """A config value as table text: strings as they are, others as JSON; missing is None."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    return json.dumps(value)


def differing_keys(configs: Sequence[Mapping[str, Any]]) -> list[str]:
    """Flat config keys whose values differ between runs (a key missing from a run counts as
    a value), leaving out seeds and ignored keys; in first-seen order."""
    keys: dict[str, None] = {}
    for config in configs:
        keys.update(dict.fromkeys(config))
    out = []
    for key in keys:
        if key in SEED_KEYS or is_ignored(key):
            continue
        if len({value_text(c.get(key)) for c in configs}) > 1:
            out.append(key)
    return out


def short_names(keys: Sequence[str]) -> dict[str, str]:
    """Each dotted key's shortest trailing part that no other key ends with
    (``model.network.hidden_size`` -> ``hidden_size``)."""
    names = {}
    for key in keys:
        parts = key.split(".")
        for i in range(len(parts) - 1, -1, -1):
            tail = ".".join(parts[i:])
            if not any(o != key and (o == tail or o.endswith(f".{tail}")) for o in keys):
                names[key] = tail
                break
        else:
            names[key] = key
    return names


def numeric_metrics(summaries: Iterable[Mapping[str, Any]]) -> list[str]:
    """Summary keys holding a number in at least one run (``_step``, ``_runtime``... left out)."""
    known: set[str] = set()
    for summary in summaries:
        for key, value in summary.items():
            if key.startswith("_") or isinstance(value, bool):
                continue
            if isinstance(value, (int, float)):
                known.add(key)
    return sorted(known)


def metrics_to_show(metric: str, known: Sequence[str]) -> list[str]:
    """The chosen metric first, then the standard test metrics some run logged."""
    return [metric, *(m for m in STANDARD_METRICS if m != metric and m in known)]


def runs_frame(records: Sequence[RunRecord], keys: Sequence[str], metrics: Sequence[str]):
    """One row per run: run id, name, folder, the differing keys and seeds (as text), then each
    metric's final value (null where a run did not log it or it was not finite)."""
    seeds = [k for k in SEED_KEYS if any(k in r.config for r in records)]
    rows = []
    for r in records:
        row: dict[str, Any] = {"run_id": r.run_id, "name": r.name}
        row["folder"] = None if r.folder is None else str(r.folder)
        for key in (*keys, *seeds):
            row[key] = value_text(r.config.get(key))
        for m in metrics:
            row[m] = number(r.summary.get(m))
        rows.append(row)
    schema = {"run_id": pl.String, "name": pl.String, "folder": pl.String}
    schema.update({k: pl.String for k in (*keys, *seeds)})
    schema.update({m: pl.Float64 for m in metrics})
    return pl.DataFrame(rows, schema=schema)


def number(value: Any) -> float | None:
    """A finite float, or None for anything else (missing, text, NaN, inf)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def aggregate(
    runs: pl.DataFrame, keys: Sequence[str], metrics: Sequence[str], minimize: bool = False
) -> pl.DataFrame:
    """One row per configuration (the values of ``keys``): ``n`` runs, then ``<metric> mean``
    and ``<metric> std`` (sample std, ddof=1; null with one value) of each metric over the
    runs that logged it. Sorted by the first metric's mean, best first, nulls last."""
    aggs = [pl.len().alias("n")]
    for m in metrics:
        aggs += [pl.col(m).mean().alias(f"{m}{MEAN}"), pl.col(m).std(ddof=1).alias(f"{m}{STD}")]
    grouped = runs.group_by(list(keys), maintain_order=True) if keys else None
    table = grouped.agg(aggs) if grouped is not None else runs.select(aggs)
    by = f"{metrics[0]}{MEAN}"
    return table.sort(by, descending=not minimize, nulls_last=True, maintain_order=True)


def bootstrap_mean_difference(
    a: Sequence[float],
    b: Sequence[float],
    resamples: int = 10_000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of mean(a) - mean(b): each resample draws len(a) values
    of ``a`` and len(b) values of ``b`` with replacement; the RNG seed makes it reproducible."""
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    rng = np.random.default_rng(seed)
    mx = x[rng.integers(0, len(x), size=(resamples, len(x)))].mean(axis=1)
    my = y[rng.integers(0, len(y), size=(resamples, len(y)))].mean(axis=1)
    tail = (1.0 - level) / 2.0 * 100.0
    lo, hi = np.percentile(mx - my, [tail, 100.0 - tail])
    return float(lo), float(hi)


def config_labels(
    table: pl.DataFrame, keys: Sequence[str], max_keys: int = MAX_KEY_COLUMNS
) -> list[str]:
    """A label per configuration (row of ``table``): ``hidden_size=8, lr=0.001`` (short key
    names; ``-`` where a run has no such key), ``all runs`` when no key differs. With more
    than ``max_keys`` differing keys, only those where the row departs from the most common
    value among the rows (``the most common values`` when it departs nowhere)."""
    short = short_names(keys)
    rows = table.select(list(keys)).rows(named=True) if keys else [{}] * table.height
    shown = list(keys)
    labels = []
    for row in rows:
        if len(keys) > max_keys:
            shown = [k for k in keys if row[k] != _most_common(r[k] for r in rows)]
        parts = [f"{short[k]}={'-' if row[k] is None else row[k]}" for k in shown]
        labels.append(
            ", ".join(parts) if parts else ("all runs" if not keys else "the most common values")
        )
    return labels


def _most_common(values: Iterable[Any]) -> Any:
    """The most frequent value, the first seen among ties."""
    counts: dict[Any, int] = {}
    for v in values:
        counts[v] = counts.get(v, 0) + 1
    return max(counts, key=lambda v: counts[v])


def config_filter(row: Mapping[str, Any], keys: Sequence[str]) -> pl.Expr:
    """The runs of the configuration ``row`` (null matches null)."""
    expr = pl.lit(True)
    for k in keys:
        expr = expr & pl.col(k).eq_missing(pl.lit(row.get(k), dtype=pl.String))
    return expr


@dataclass
class Difference:
    """The best configuration minus the second best on one metric."""

    metric: str
    best: str  # label of the best configuration
    second: str
    rank_best: int  # 1-based rows of the table
    rank_second: int
    n_best: int
    n_second: int
    difference: float
    ci: tuple[float, float] | None  # None when a configuration has fewer than 2 values
    level: float = 0.95
    resamples: int = 10_000
    seed: int = 0

    def sentence(self) -> str:
        """The result in words, for the terminal and comparison.md."""
        best, second = (
            f"#{rank}" + (f" [{label}]" if len(label) <= 60 else "")
            for rank, label in ((self.rank_best, self.best), (self.rank_second, self.second))
        )
        head = (
            f"Best minus second on {self.metric}: {best} (n={self.n_best}) - "
            f"{second} (n={self.n_second}) = {self.difference:.4g}"
        )
        if self.ci is None:
            return (
                f"{head}. This is the plain difference of their means: a bootstrap confidence "
                "interval needs >= 2 seeds per configuration (sweep seed=0,1,... as well)."
            )
        lo, hi = self.ci
        verdict = (
            "it excludes 0" if lo > 0 or hi < 0 else "it includes 0: the two are not separated"
        )
        return (
            f"{head}; {self.level:.0%} bootstrap CI [{lo:.4g}, {hi:.4g}] "
            f"({self.resamples:,} resamples of each configuration's seeds, RNG seed "
            f"{self.seed}); {verdict}."
        )


def best_two(
    table: pl.DataFrame,
    runs: pl.DataFrame,
    keys: Sequence[str],
    metric: str,
    resamples: int = 10_000,
    level: float = 0.95,
    seed: int = 0,
) -> Difference | None:
    """The difference between the first two configurations of ``table`` (as sorted by
    :func:`aggregate`) that logged ``metric``, with a bootstrap CI over their runs' values when
    each has at least two; None with fewer than two such configurations."""
    ranked = [i for i, v in enumerate(table[f"{metric}{MEAN}"]) if v is not None]
    if len(ranked) < 2:
        return None
    labels = config_labels(table, keys)
    first, second = (table.row(i, named=True) for i in ranked[:2])
    a = runs.filter(config_filter(first, keys))[metric].drop_nulls().to_numpy()
    b = runs.filter(config_filter(second, keys))[metric].drop_nulls().to_numpy()
    ci = None
    if len(a) >= 2 and len(b) >= 2:
        ci = bootstrap_mean_difference(a, b, resamples, level, seed)
    return Difference(
        metric=metric,
        best=labels[ranked[0]],
        second=labels[ranked[1]],
        rank_best=ranked[0] + 1,
        rank_second=ranked[1] + 1,
        n_best=len(a),
        n_second=len(b),
        difference=float(a.mean() - b.mean()),
        ci=ci,
        level=level,
        resamples=resamples,
        seed=seed,
    )


def mean_std_text(mean: float | None, std: float | None, digits: int = 4) -> str:
    """``1.234 ± 0.05``; the mean alone without a std; ``-`` when nothing was logged."""
    if mean is None:
        return "-"
    if std is None:
        return f"{mean:.{digits}g}"
    return f"{mean:.{digits}g} ± {std:.{digits - 1}g}"
