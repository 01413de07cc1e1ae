"""Backtest speed: ``envs.backtest.backtest`` beside vectorbt's ``Portfolio.from_orders`` on the
same orders, in one run, one process, one CPU thread on both sides.

What is priced: ``--paths`` target paths (default 64) over ``--bars`` daily bars (default 8,000)
of one synthetic ticker (our data pipeline, seed 0). Each path holds a target weight in
{-0.9, -0.5, 0, 0.5, 0.9} and moves to a new random one with probability 0.2 per bar, so about
a fifth of the bars trade. A decision at the close of bar t is filled at the open of t+1 and
marked at its close.

Rows (seconds of one call, the best of ``--repeats`` once warm):

* **ours, all frictions**: commission 1 bp, spread 2 bp, slippage 1 bp, square-root impact
  0.1 (``conf/env``'s defaults): the eager loop, the compiled scan's first call (its compile
  included, a fresh inductor cache unless ``--warm-compile-cache``) and the compiled scan warm.
  The whole ``backtest`` call is timed: the equity curve, every per-bar record and the metrics.
* **ours, commission only** (1 bp, as vectorbt's ``fees``): compiled, warm.
* **vectorbt** ``Portfolio.from_orders(close, size, size_type="targetpercent", price=open,
  fees=1e-4)``, then ``.value()`` (the equity curve), first call and warm. An order is given
  only on bars whose target changes (NaN elsewhere), as ours trades only then. vectorbt has no
  impact model, so it is compared with our commission-only run. Targets stay within +-0.9:
  vectorbt shrinks a buy its cash cannot pay with fees, ours lets cash dip by the fee.

Checks printed under the table: the largest relative difference of the equity curves (ours
commission-only against vectorbt; ours compiled against ours eager with every friction), and
our metrics against empyrical's (Sharpe, Sortino, annual return and volatility, max drawdown)
on every path.

Run (from the repository root, in the venv with the ``bench`` extra installed)::

    python bench/backtest.py                      # 64 paths x 8,000 bars, ~1 minute on 2 cores
    python bench/backtest.py --quick              # 8 paths x 1,000 bars, a smoke run
    python bench/backtest.py --json /tmp/backtest.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

LEVELS = (-0.9, -0.5, 0.0, 0.5, 0.9)  # target weights a path moves between
MOVE = 0.2  # probability per bar that a path moves to a new random level
CAPITAL = 100_000.0
COMMISSION_BPS = 1.0
START = 10  # the first decision bar
T0 = time.perf_counter()


def log(msg: str) -> None:
    print(f"[{time.perf_counter() - T0:6.1f}s] {msg}", file=sys.stderr, flush=True)


def market(bars: int):
    """One synthetic ticker of at least ``bars + START + 1`` daily bars."""
    from datamodules.sources import SyntheticSource

    sessions = bars + START + 80  # the pipeline drops its warm-up bars
    return (
        SyntheticSource(
            tickers=["AAA"],
            bar_size="1d",
            seed=0,
            cache_dir=None,
            synthetic={"sessions": sessions},
        )
        .build()
        .market
    )


def target_paths(paths: int, bars: int, seed: int = 0) -> torch.Tensor:
    """(paths, bars, 1) sticky random target weights."""
    rng = np.random.default_rng(seed)
    levels = np.asarray(LEVELS)
    draw = rng.integers(0, len(levels), size=(paths, bars))
    move = rng.random((paths, bars)) < MOVE
    move[:, 0] = True
    index = np.where(move, np.arange(bars), 0)
    last = np.maximum.accumulate(index, axis=1)  # the bar of each path's last move
    held = np.take_along_axis(draw, last, axis=1)
    return torch.as_tensor(levels[held], dtype=torch.float64).unsqueeze(-1)


def timed(call, repeats: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = call()
        best = min(best, time.perf_counter() - start)
    return best, out


def vectorbt_orders(mk, targets: torch.Tensor):
    """The same orders for vectorbt: rows are the fill bars, NaN where the target is kept."""
    t = targets[:, :, 0].numpy()
    steps = t.shape[1]
    previous = np.concatenate([np.zeros((t.shape[0], 1)), t[:, :-1]], axis=1)
    size = np.where(t != previous, t, np.nan).T  # (bars, paths)
    fills = slice(START + 1, START + steps + 1)
    close = np.repeat(mk.close[fills, :1], t.shape[0], axis=1)
    price = np.repeat(mk.open[fills, :1], t.shape[0], axis=1)
    return close, price, size


def empyrical_gap(result, periods_per_year: float) -> float:
    """The largest relative difference of our metrics from empyrical's over every path."""
    import empyrical

    gap = 0.0
    returns = result.returns.numpy()
    pairs = {
        "sharpe": lambda r: empyrical.sharpe_ratio(r, annualization=periods_per_year),
        "sortino": lambda r: empyrical.sortino_ratio(r, annualization=periods_per_year),
        "annual_return": lambda r: empyrical.annual_return(r, annualization=periods_per_year),
        "annual_volatility": lambda r: empyrical.annual_volatility(
            r, annualization=periods_per_year
        ),
        "max_drawdown": empyrical.max_drawdown,
    }
    for name, theirs in pairs.items():
        ours = result.metrics[name].numpy()
        for p in range(returns.shape[0]):
            want = float(theirs(returns[p]))
            gap = max(gap, abs(float(ours[p]) - want) / max(abs(want), 1e-12))
    return gap


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--paths", type=int, help="target paths (default 64, quick 8)")
    p.add_argument("--bars", type=int, help="decisions per path (default 8000, quick 1000)")
    p.add_argument("--repeats", type=int, default=5, help="warm calls timed (the best counts)")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    p.add_argument("--quick", action="store_true", help="a smoke run: 8 paths x 1,000 bars")
    p.add_argument("--json", type=Path, help="write the rows and checks to this file")
    p.add_argument(
        "--warm-compile-cache",
        action="store_true",
        help="reuse the default inductor cache (else a fresh one: the first call compiles cold)",
    )
    args = p.parse_args(argv)
    paths = args.paths or (8 if args.quick else 64)
    bars = args.bars or (1000 if args.quick else 8000)
    cache = None
    if not args.warm_compile_cache:
        cache = tempfile.mkdtemp(prefix="backtest_bench_inductor_")
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache
    warnings.filterwarnings("ignore")
    torch.set_num_threads(max(1, args.threads))
    import vectorbt as vbt

    from envs.backtest import backtest
    from envs.frictions import Frictions

    mk = market(bars)
    targets = target_paths(paths, bars)
    every = Frictions()  # commission, spread, slippage and impact as conf/env sets them
    commission = Frictions(
        commission_bps=COMMISSION_BPS, spread_bps=0.0, slippage_bps=0.0, impact_coef=0.0
    )
    log(f"{paths} paths x {bars} bars, {mk.num_bars} bars of data, {args.threads} thread(s)")

    def ours(frictions: Frictions, compiled: bool):
        return lambda: backtest(mk, targets, START, frictions, CAPITAL, compile=compiled)

    rows = []
    eager_s, eager = timed(ours(every, False), max(1, min(args.repeats, 2)))
    rows.append(("ours, all frictions", "eager loop", eager_s))
    log(f"ours eager {eager_s:.3f} s")
    cold_s, _ = timed(ours(every, True), 1)
    rows.append(("ours, all frictions", "compiled, first call (compiles)", cold_s))
    log(f"ours compiled, first call {cold_s:.2f} s")
    warm_s, fused = timed(ours(every, True), args.repeats)
    rows.append(("ours, all frictions", "compiled, warm", warm_s))
    timed(ours(commission, True), 1)  # compile the commission-only shape
    lean_s, lean = timed(ours(commission, True), args.repeats)
    rows.append(("ours, commission only", "compiled, warm", lean_s))
    log(f"ours compiled warm {warm_s:.3f} s (commission only {lean_s:.3f} s)")

    close, price, size = vectorbt_orders(mk, targets)

    def theirs():
        pf = vbt.Portfolio.from_orders(
            close,
            size,
            size_type="targetpercent",
            price=price,
            fees=COMMISSION_BPS * 1e-4,
            init_cash=CAPITAL,
            freq="1D",
        )
        return pf.value()

    vbt_first, _ = timed(theirs, 1)
    rows.append(("vectorbt, commission only", "first call (numba, cached on disk)", vbt_first))
    vbt_s, value = timed(theirs, args.repeats)
    rows.append(("vectorbt, commission only", "warm", vbt_s))
    log(f"vectorbt first {vbt_first:.2f} s, warm {vbt_s:.3f} s")

    ours_eq = lean.equity[:, 1:].numpy().T
    vbt_gap = float(np.max(np.abs(np.asarray(value) - ours_eq) / np.abs(ours_eq)))
    eager_gap = float(((fused.equity - eager.equity).abs() / eager.equity.abs()).max())
    emp_gap = empyrical_gap(fused, mk.periods_per_year)
    checks = {
        "equity_vs_vectorbt_max_rel": vbt_gap,
        "compiled_vs_eager_equity_max_rel": eager_gap,
        "metrics_vs_empyrical_max_rel": emp_gap,
        "ours_warm_over_vectorbt_warm": vbt_s / warm_s,
        "trades_per_path": float(fused.fills.sum(1).double().mean()),
    }
    print_table(rows, vbt_s, paths, bars, args.threads, checks)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        meta = {
            "paths": paths,
            "bars": bars,
            "threads": args.threads,
            "torch": torch.__version__,
            "vectorbt": vbt.__version__,
            "python": platform.python_version(),
            "cpu_cores": os.cpu_count(),
            "cold_compile_cache": cache is not None,
        }
        out = [
            {"what": w, "variant": v, "seconds": s, "vs_vectorbt": vbt_s / s} for w, v, s in rows
        ]
        args.json.write_text(json.dumps({"meta": meta, "rows": out, "checks": checks}, indent=2))
        log(f"wrote {args.json}")
    if cache:
        shutil.rmtree(cache, ignore_errors=True)
    return 0


def print_table(rows, vbt_s: float, paths: int, bars: int, threads: int, checks: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not console.is_terminal:
        console = Console(width=130)
    table = Table(
        title=f"Backtest of {paths} paths x {bars:,} bars, {threads} CPU thread(s), torch "
        f"{torch.__version__}",
        title_justify="left",
    )
    for col, kw in (
        ("what", {}),
        ("variant", {}),
        ("seconds", {"justify": "right"}),
        ("vs vectorbt warm", {"justify": "right"}),
    ):
        table.add_column(col, **kw)
    for what, variant, seconds in rows:
        table.add_row(what, variant, f"{seconds:.3f}", f"{vbt_s / seconds:.2f}x")
    console.print(table)
    console.print(
        f"equity, ours (commission only) vs vectorbt: max relative difference "
        f"{checks['equity_vs_vectorbt_max_rel']:.1e}; ours compiled vs eager (all frictions): "
        f"{checks['compiled_vs_eager_equity_max_rel']:.1e}; metrics vs empyrical (Sharpe, "
        f"Sortino, annual return and volatility, max drawdown): "
        f"{checks['metrics_vs_empyrical_max_rel']:.1e}; "
        f"{checks['trades_per_path']:.0f} trades per path.",
        highlight=False,
    )
    ratio = checks["ours_warm_over_vectorbt_warm"]
    verdict = "met" if ratio >= 1.0 else "NOT met"
    console.print(
        f"target ours (all frictions, warm) at least as fast as vectorbt warm: {ratio:.2f}x "
        f"— {verdict}",
        highlight=False,
    )


if __name__ == "__main__":
    sys.exit(main())
