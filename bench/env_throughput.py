"""Env-steps per second of our TorchRL trading envs beside gym-anytrading, TorchRL's
FinancialRegimeEnv and a minimal hand-written torch env, all in one run on the same data.

What is measured (steps/s are env-steps summed over the batch: iterations x num_envs; each
timing window, ``--seconds`` after a warm-up, is cut into 4 chunks and the best chunk's rate
is shown, the window's mean goes to the JSON too):

* **ours** — ``single_ticker``, ``dual_ticker`` (NVDA + MSFT, reward weights 0.5/0.5) and
  ``portfolio`` (8 tickers, factor actions): the ``conf/env`` configs composed by Hydra (as
  ``env=NAME`` composes them in a run) with every risk rule on, instantiated and built by
  ``envs.factory.EnvFactory``, every friction on, at each ``--envs`` batch size: first the
  *default* path (the config as it is, ``compile: auto``: compiled from
  ``env.compile_min_envs`` envs on a CPU, always on a GPU), then the other path forced
  (``compile: false`` or ``true``), so both eager and compiled are measured at every size.
  *steps/s* is the full TorchRL path a collector runs: ``env.step_and_maybe_reset(td)`` with
  a fresh random action each step (drawn from a bank of pre-sampled ``action_spec.rand()``
  tensors), so the TensorDict packing, spec handling and partial resets are included.
  *core steps/s* is the env's pure transition, ``env.advance(action)``, with one full
  ``env.reset()`` per episode length. *compile s* is the env's own timing of its first
  compiled reset, step and restart (``env.compile_seconds``, logged by the env; cold: a fresh
  inductor cache per run); for the minimal env, the warm-up calls' wall time minus what as
  many steady calls take.
* **gym-anytrading** ``stocks-v0`` (one env; *core* = the unwrapped env without gymnasium's
  wrappers) and gymnasium's ``SyncVectorEnv`` of 64 of them, random actions, reset on done.
* **TorchRL FinancialRegimeEnv** (it simulates its own prices) at batch 1 and 64; a batch
  size it cannot run is recorded with its error instead of a number.
* **minimal** — the ceiling: a plain batched torch function (no EnvBase, no TensorDict) over
  the same price returns: position from a {-1, 0, 1} action, reward = position x next return
  - cost x |position change|, a 10-return observation window (gather), random restart at the
  end of the series. Eager and ``torch.compile``-d at each batch size.

The data: one synthetic market from our pipeline (``SyntheticSource(tickers=["NVDA", "MSFT"],
bar_size="15min", seed=0).build()``); its NVDA closes are the price series
of every peer and of the minimal env; our single- and dual-ticker envs run on its training
split (the single-ticker env on the NVDA column of that same market); the portfolio env on
an 8-ticker synthetic market built the same way.

Ratios: *vs anytrading* = steps/s over gym-anytrading's single env; *vs minimal* = steps/s
(and core steps/s) over the minimal env at the same device, batch size and variant (eager
vs eager, compiled vs compiled; gym rows against the eager minimal env); *vs minimal
compiled* = steps/s over the compiled minimal env at the same device and batch size. The
issue's targets are checked under the table: the default dual_ticker path at 4096 and 65536
envs at least 50% of the minimal compiled env, and at 4096 envs at least 35x gym-anytrading.

The table's rows are timed one after another, minutes apart, and on a shared 2-core machine
the speed of every row moves by 20-35% between runs, so a ratio of two rows says little. For
the two targets against the minimal env the run then times both sides again in ``--rounds``
paired rounds (default 5): two adjacent windows of ``--seconds``/2, ours and the compiled
minimal env, in alternating order. The target is judged on the median of the rounds' ratios;
their range and the table's own ratio are printed beside it (and in the JSON,
``meta.paired_rounds``).

Run (from the repository root, in the venv with the ``bench`` extra installed)::

    python bench/env_throughput.py                       # full run, ~5 minutes on 2 cores
    python bench/env_throughput.py --quick               # smoke run: num_envs 1 and 4096
    python bench/env_throughput.py --quick --envs 1 --compile-min-envs 2 --seconds 0.2  # ~20 s
    python bench/env_throughput.py --envs 1,64 --seconds 1 --json /tmp/env_bench.json

CUDA rows (device="cuda") are added when ``torch.cuda.is_available()``; gym-anytrading is
CPU-only. Timings use ``time.perf_counter`` with ``torch.cuda.synchronize()`` around them on
CUDA, and torch's intra-op threads set to ``--threads`` (default: the machine's cores).

Every row runs under the allocator setting a run of the app makes: freed memory kept for reuse
(``hardware.keep_freed_mib`` of ``conf/hardware/cpu.yaml``, ``experiments.runtime.allocator``);
``--keep-freed-mib none`` measures with glibc's defaults (``keep_freed_mib`` in the JSON).

On a small shared machine, another busy process stalls every multi-threaded torch op (each
waits for the descheduled worker thread): per-step times can grow 5-20x for whole timing
windows, which the best-chunk rate cannot hide. A busy start is flagged under the table;
``--threads 1`` gives stable (if lower) numbers there.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from allocator_option import add_keep_freed_argument, keep_freed_setting
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from datamodules.market import Market
from datamodules.sources import SyntheticSource
from envs.factory import EnvFactory
from envs.trading import compile_choice

REPO = Path(__file__).resolve().parents[1]

ALL_RISK_ON = {
    "max_daily_drawdown": 0.025,
    "drawdown_penalty": 1.0,
    "turnover_cap_hour": 3.0,
    "turnover_cap_session": 10.0,
    "loss_cut": 0.2,
    "profit_lock": 0.3,
    "max_gross_exposure": 1.0,
    "max_position": 1.0,
}
PORTFOLIO_TICKERS = ["AAA", "BBB", "CCC", "DDD", "EEE", "FFF", "GGG", "HHH"]
ACTION_BANK = 16  # pre-sampled random action tensors, cycled through
MIN_WINDOW = 10  # minimal env and gym-anytrading observation window
MINIMAL_COST = 1e-4  # minimal env: cost per unit of position change (fraction of notional)
CHUNKS = 4  # each timing window is cut into this many chunks; the best chunk is reported

GYM_ANYTRADING = "anytrading stocks-v0"
GYM_VECTOR = "anytrading SyncVectorEnv"
REGIME = "torchrl FinancialRegimeEnv"
MINIMAL = "minimal torch fn"

T0 = time.perf_counter()


def log(msg: str) -> None:
    print(f"[{time.perf_counter() - T0:6.1f}s] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- timing
def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


@dataclasses.dataclass
class Timing:
    iters: int  # calls made in the timing window
    elapsed: float  # seconds of the window
    best: float  # calls per second of the fastest chunk of the window

    @property
    def mean(self) -> float:
        return self.iters / self.elapsed


def timed(
    call: Callable[[int], None],
    device: str,
    seconds: float,
    min_iters: int = 2,
    chunks: int = CHUNKS,
) -> Timing:
    """Call ``call(i)`` for i = 0, 1, ... until ``seconds`` and ``min_iters`` are both reached.

    The window is cut into ``chunks`` chunks; the best chunk's rate discounts stalls from
    other processes on a shared machine (the mean over the window is kept too)."""
    sync(device)
    start = chunk_start = time.perf_counter()
    i = chunk_iters = 0
    best = 0.0
    while True:
        call(i)
        i += 1
        chunk_iters += 1
        now = time.perf_counter()
        if now - chunk_start >= seconds / chunks:
            sync(device)
            now = time.perf_counter()
            best = max(best, chunk_iters / (now - chunk_start))
            chunk_start, chunk_iters = now, 0
        if i >= min_iters and now - start >= seconds:
            break
    sync(device)
    elapsed = time.perf_counter() - start
    return Timing(i, elapsed, max(best, i / elapsed))


def rates(num_envs: int, steps: Timing | None, core: Timing | None = None) -> dict:
    """Row values: env-steps/s (best chunk, and the window's mean) of the step path and core."""
    out: dict = {}
    for key, t in (("steps_per_s", steps), ("core_steps_per_s", core)):
        if t is not None:
            out[key] = t.best * num_envs
            out[f"{key}_mean"] = t.mean * num_envs
            out[key.replace("steps_per_s", "iters")] = t.iters
    return out


def compile_seconds(warm_s: float, n_warm: int, steady: Timing) -> float:
    """Warm-up time beyond what the same calls take once compiled."""
    return max(warm_s - n_warm / steady.best, 0.0)


def warm(call: Callable[[int], None], device: str, iters: int) -> float:
    """Run ``iters`` warm-up calls; returns their wall time (compiles included)."""
    sync(device)
    start = time.perf_counter()
    for i in range(iters):
        call(i)
    sync(device)
    return time.perf_counter() - start


def row(env: str, device: str, num_envs: int, variant: str, **values) -> dict:
    base = {
        "env": env,
        "device": device,
        "num_envs": num_envs,
        "variant": variant,
        "steps_per_s": None,
        "core_steps_per_s": None,
        "compile_s": None,
        "default": False,  # ours: the path env.compile=auto (the config's default) takes
        "error": None,
    }
    return {**base, **values}


def fmt_rate(x: float | None) -> str:
    if x is None:
        return "-"
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if x >= scale:
            return f"{x / scale:.3g} {unit}"
    return f"{x:.3g}"


def fmt_ratio(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:.3g}x"


# --------------------------------------------------------------------------- data and configs
def single_column(market: Market, asset: int) -> Market:
    """The same market restricted to one ticker (same bars, same features)."""
    cut = slice(asset, asset + 1)
    per_asset = ("open", "high", "low", "close", "volume", "features", "sigma", "adv")
    return dataclasses.replace(
        market,
        tickers=market.tickers[cut],
        **{name: getattr(market, name)[:, cut] for name in per_asset},
        normalisation={
            k: {s: v[cut] for s, v in stats.items()} for k, stats in market.normalisation.items()
        },
    )


def env_configs() -> dict[str, DictConfig]:
    """conf/env/{single_ticker,dual_ticker,portfolio}.yaml composed by Hydra, every risk rule on."""
    from hydra import compose, initialize_config_dir

    risk_on = [f"risk.{key}={value}" for key, value in ALL_RISK_ON.items()]
    with initialize_config_dir(config_dir=str(REPO / "conf" / "env"), version_base=None):
        cfgs = {
            name: compose(name, overrides=risk_on)
            for name in ("single_ticker", "dual_ticker", "portfolio")
        }
    assert list(cfgs["portfolio"].tickers) == PORTFOLIO_TICKERS
    return cfgs


# --------------------------------------------------------------------------- ours
def our_stepper(
    market: Market,
    span: tuple[int, int],
    cfg: DictConfig,
    num_envs: int,
    device: str,
    setting: bool | str,
) -> tuple[object, torch.Tensor, Callable[[int], None]]:
    """Our env built from ``cfg`` with env.compile=``setting``, its bank of random actions, and
    ``step(i)``: one ``step_and_maybe_reset`` with the bank's action ``i``."""
    torch._dynamo.reset()  # each env instance compiles its own graph
    factory = EnvFactory(instantiate(OmegaConf.merge(cfg, {"compile": setting})), market)
    env = factory(span, num_envs=num_envs, device=device)
    bank = torch.stack([env.action_spec.rand() for _ in range(ACTION_BANK)])
    state = {"td": env.reset()}

    def step(i: int) -> None:
        td = state["td"]
        td["action"] = bank[i % ACTION_BANK]
        _, state["td"] = env.step_and_maybe_reset(td)

    return env, bank, step


def bench_ours(
    name: str,
    market: Market,
    span: tuple[int, int],
    cfg: DictConfig,
    num_envs: int,
    device: str,
    setting: bool | str,
    seconds: float,
) -> dict:
    """One row of our env: ``setting`` is env.compile (True, False, or "auto": the config's
    default, the row the targets judge)."""
    default = setting == "auto"
    compiled, _ = compile_choice(setting, num_envs, device, int(cfg.get("compile_min_envs", 512)))
    variant = "compiled" if compiled else "eager"
    try:
        env, bank, step = our_stepper(market, span, cfg, num_envs, device, setting)
        assert env.compiled == compiled
        n_warm = 3 if compiled else 1
        warm(step, device, n_warm)
        steps = timed(step, device, seconds)
        compile_s = env.compile_seconds  # the env's own timing of its first compiled reset+step

        env.reset()
        length = env.length

        def core(i: int) -> None:
            env.advance(bank[i % ACTION_BANK])
            if (i + 1) % length == 0:
                env.reset()

        warm(core, device, 1)
        env.reset()
        core_t = timed(core, device, seconds)
        out = row(
            f"ours {name}",
            device,
            num_envs,
            variant,
            default=default,
            compile_s=compile_s,
            **rates(num_envs, steps, core_t),
        )
        return out
    except Exception as exc:  # record, do not crash the run
        return row(f"ours {name}", device, num_envs, variant, default=default, error=_short(exc))


# --------------------------------------------------------------------------- minimal env
def make_minimal(returns: torch.Tensor, window: int, cost: float):
    """A batched trading step as a plain torch function over a (T,) return series."""
    last = returns.shape[0] - 1  # the last bar a reward can use
    offsets = torch.arange(window - 1, -1, -1, device=returns.device)

    def step(pos: torch.Tensor, t: torch.Tensor, action: torch.Tensor):
        new_pos = (action - 1).to(returns.dtype)  # {0, 1, 2} -> {-1, 0, +1}
        nxt = t + 1
        reward = new_pos * returns[nxt] - cost * (new_pos - pos).abs()
        done = nxt >= last
        start = torch.randint(window - 1, last, t.shape, device=t.device)
        nxt = torch.where(done, start, nxt)
        new_pos = torch.where(done, torch.zeros_like(new_pos), new_pos)
        obs = returns[nxt.unsqueeze(-1) - offsets]  # (N, window): returns of bars <= t
        return new_pos, nxt, obs, reward, done

    def reset(num_envs: int):
        pos = torch.zeros(num_envs, dtype=returns.dtype, device=returns.device)
        t = torch.randint(window - 1, last, (num_envs,), device=returns.device)
        return pos, t

    return step, reset


def minimal_stepper(
    returns: torch.Tensor, num_envs: int, device: str, compiled: bool
) -> Callable[[int], None]:
    """``step(i)``: one step of the minimal env (``torch.compile``-d if ``compiled``) over
    ``num_envs`` envs with the ``i``-th of a bank of random actions."""
    step_fn, reset = make_minimal(returns.to(device), MIN_WINDOW, MINIMAL_COST)
    if compiled:
        torch._dynamo.reset()
        step_fn = torch.compile(step_fn, dynamic=False)
    bank = torch.randint(0, 3, (ACTION_BANK, num_envs), device=device)
    pos, t = reset(num_envs)
    state = {"pos": pos, "t": t}

    def step(i: int) -> None:
        state["pos"], state["t"], _, _, _ = step_fn(state["pos"], state["t"], bank[i % ACTION_BANK])

    return step


def bench_minimal(
    returns: torch.Tensor, num_envs: int, device: str, compiled: bool, seconds: float
) -> dict:
    variant = "compiled" if compiled else "eager"
    try:
        step = minimal_stepper(returns, num_envs, device, compiled)
        n_warm = 3 if compiled else 1
        warm_s = warm(step, device, n_warm)
        steps = timed(step, device, seconds)
        return row(
            MINIMAL,
            device,
            num_envs,
            variant,
            compile_s=compile_seconds(warm_s, n_warm, steps) if compiled else None,
            **rates(num_envs, steps, steps),
        )
    except Exception as exc:
        return row(MINIMAL, device, num_envs, variant, error=_short(exc))


# --------------------------------------------------------------------------- peers
def bench_anytrading(prices: np.ndarray, seconds: float) -> list[dict]:
    import gym_anytrading  # noqa: F401  (registers stocks-v0)
    import gymnasium
    import pandas as pd

    df = pd.DataFrame({"Close": prices.astype(np.float64)})

    def make():
        return gymnasium.make(
            "stocks-v0", df=df, window_size=MIN_WINDOW, frame_bound=(MIN_WINDOW, len(prices))
        )

    rows = []
    try:
        env = make()
        env.reset(seed=0)
        env.action_space.seed(0)
        actions = np.random.default_rng(0).integers(0, 2, size=4096)

        def loop(target):
            def call(i: int) -> None:
                _, _, terminated, truncated, _ = target.step(int(actions[i % 4096]))
                if terminated or truncated:
                    target.reset()

            return call

        warm(loop(env), "cpu", 10)
        steps = timed(loop(env), "cpu", seconds, min_iters=100)
        raw = env.unwrapped
        raw.reset(seed=0)
        core_t = timed(loop(raw), "cpu", seconds, min_iters=100)
        rows.append(row(GYM_ANYTRADING, "cpu", 1, "python", **rates(1, steps, core_t)))
        env.close()
    except Exception as exc:
        rows.append(row(GYM_ANYTRADING, "cpu", 1, "python", error=_short(exc)))

    n = 64
    name = GYM_VECTOR
    try:
        vec = gymnasium.vector.SyncVectorEnv([make for _ in range(n)])
        vec.reset(seed=0)
        acts = np.random.default_rng(1).integers(0, 2, size=(64, n))

        def vstep(i: int) -> None:
            vec.step(acts[i % 64])  # autoresets finished envs (gymnasium's next-step mode)

        warm(vstep, "cpu", 5)
        steps = timed(vstep, "cpu", seconds, min_iters=10)
        rows.append(row(name, "cpu", n, "python", **rates(n, steps)))
        vec.close()
    except Exception as exc:
        rows.append(row(name, "cpu", n, "python", error=_short(exc)))
    return rows


def bench_financial_regime(num_envs: int, device: str, seconds: float) -> dict:
    from torchrl.envs.custom import FinancialRegimeEnv

    name = REGIME
    try:
        env = FinancialRegimeEnv(seed=0, device=device)
        if num_envs == 1:
            td = env.reset()
        else:  # the batched use: reset with a batch of parameters
            td = env.reset(env.gen_params(batch_size=[num_envs], device=device))
        shape = td.batch_size
        bank = torch.stack([env.action_spec.rand(shape) for _ in range(ACTION_BANK)])
        state = {"td": td}

        def step(i: int) -> None:
            td = state["td"]
            td["action"] = bank[i % ACTION_BANK]
            _, state["td"] = env.step_and_maybe_reset(td)

        warm(step, device, 3)
        steps = timed(step, device, seconds)
        max_steps = FinancialRegimeEnv.DEFAULT_MAX_STEPS
        state["td"] = env.reset(td.select("params")) if num_envs > 1 else env.reset()

        def core(i: int) -> None:
            td = state["td"]
            td["action"] = bank[i % ACTION_BANK]
            state["td"] = env._step(td)  # its pure step, no TorchRL wrapping
            if (i + 1) % max_steps == 0:
                state["td"] = env.reset(td.select("params")) if num_envs > 1 else env.reset()

        core_t = timed(core, device, seconds)
        return row(name, device, num_envs, "eager", **rates(num_envs, steps, core_t))
    except Exception as exc:
        return row(name, device, num_envs, "eager", error=_short(exc))


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:160]}"


# --------------------------------------------------------------------------- report
def add_ratios(rows: list[dict]) -> None:
    gym = next((r for r in rows if r["env"] == GYM_ANYTRADING and r["steps_per_s"]), None)
    minimal = {
        (r["device"], r["num_envs"], r["variant"]): r
        for r in rows
        if r["env"] == MINIMAL and r["steps_per_s"]
    }
    for r in rows:
        r["vs_anytrading"] = r["vs_minimal"] = r["core_vs_minimal"] = None
        r["vs_minimal_compiled"] = None
        if r["steps_per_s"] is None:
            continue
        if gym is not None:
            r["vs_anytrading"] = r["steps_per_s"] / gym["steps_per_s"]
        fused = minimal.get((r["device"], r["num_envs"], "compiled"))
        if fused is not None:
            r["vs_minimal_compiled"] = r["steps_per_s"] / fused["steps_per_s"]
        variant = r["variant"] if r["variant"] in ("eager", "compiled") else "eager"
        ref = minimal.get((r["device"], r["num_envs"], variant))
        if ref is not None:
            r["vs_minimal"] = r["steps_per_s"] / ref["steps_per_s"]
            if r["core_steps_per_s"] is not None:
                r["core_vs_minimal"] = r["core_steps_per_s"] / ref["steps_per_s"]


# The targets for the default path (env.compile=auto) of dual_ticker on the CPU:
# (num_envs, measure, at least).
TARGETS = (
    (4096, "vs_minimal_compiled", 0.5),
    (65536, "vs_minimal_compiled", 0.5),
    (4096, "vs_anytrading", 35.0),
)


def paired_rounds(
    ours: Callable[[int], None],
    minimal: Callable[[int], None],
    num_envs: int,
    seconds: float,
    rounds: int,
) -> dict:
    """Our default dual_ticker step against the compiled minimal env in ``rounds`` pairs of
    adjacent timing windows (``seconds`` each; ours first in even rounds, the minimal env first
    in odd ones): each round's ratio is ours' best-chunk rate over the minimal env's in the
    same round, so a change in the machine's speed between the table's rows, which come
    minutes apart, moves both sides of a ratio alike. Returns every ratio, their median and
    range."""
    ratios = []
    for r in range(rounds):
        first, second = (ours, minimal) if r % 2 == 0 else (minimal, ours)
        a, b = timed(first, "cpu", seconds), timed(second, "cpu", seconds)
        mine, theirs = (a, b) if r % 2 == 0 else (b, a)
        ratios.append(mine.best / theirs.best)
        log(f"paired round {r + 1}/{rounds}, {num_envs} envs: {ratios[-1]:.3f}")
    return {
        "num_envs": num_envs,
        "seconds": seconds,
        "ratios": ratios,
        "median": statistics.median(ratios),
        "low": min(ratios),
        "high": max(ratios),
    }


def bench_paired(
    market: Market,
    span: tuple[int, int],
    cfg: DictConfig,
    returns: torch.Tensor,
    num_envs: int,
    seconds: float,
    rounds: int,
) -> dict:
    """:func:`paired_rounds` of the default dual_ticker env and the compiled minimal env at
    ``num_envs`` envs on the CPU, both built afresh and warmed up (the compiles come from the
    run's inductor cache: the table's rows compiled the same graphs)."""
    _, _, ours = our_stepper(market, span, cfg, num_envs, "cpu", "auto")
    warm(ours, "cpu", 3)
    minimal = minimal_stepper(returns, num_envs, "cpu", True)  # on a CPU ours uses no dynamo
    warm(minimal, "cpu", 3)
    return paired_rounds(ours, minimal, num_envs, seconds, rounds)


def check_targets(rows: list[dict], paired: list[dict] = ()) -> list[dict]:
    """Each target against the default dual_ticker row at its num_envs (None: not measured).
    A ratio to the compiled minimal env is the median of the paired rounds at that size where
    they ran (``window``: the table row's own ratio, from windows minutes apart)."""
    rounds = {p["num_envs"]: p for p in paired}
    out = []
    for n, measure, least in TARGETS:
        r = next(
            (
                r
                for r in rows
                if r["env"] == "ours dual_ticker"
                and r["device"] == "cpu"
                and r["default"]
                and r["num_envs"] == n
            ),
            None,
        )
        value = window = None if r is None else r.get(measure)
        pair = rounds.get(n) if measure == "vs_minimal_compiled" else None
        if pair is not None:
            value = pair["median"]
        out.append(
            {
                "num_envs": n,
                "measure": measure,
                "target": least,
                "value": value,
                "window": window,
                "paired": pair,
                "met": None if value is None else bool(value >= least),
            }
        )
    return out


def print_table(rows: list[dict], meta: dict, notes: list[str]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not console.is_terminal:
        console = Console(width=170)
    title = (
        f"Env throughput — {meta['cpu_cores']} CPU cores ({meta['torch_threads']} torch thread(s)), "
        f"torch {meta['torch']}, torchrl {meta['torchrl']}, device(s): {', '.join(meta['devices'])}"
        + (f" [{meta['gpu']}]" if meta.get("gpu") else "")
    )
    table = Table(title=title, title_justify="left", show_lines=False)
    for col, kw in (
        ("env", {}),
        ("device", {}),
        ("num_envs", {"justify": "right"}),
        ("variant", {}),
        ("steps/s", {"justify": "right"}),
        ("core steps/s", {"justify": "right"}),
        ("compile s", {"justify": "right"}),
        ("vs anytrading", {"justify": "right"}),
        ("vs minimal", {"justify": "right"}),
        ("vs minimal compiled", {"justify": "right"}),
        ("core vs minimal", {"justify": "right"}),
    ):
        table.add_column(col, **kw)
    previous = None
    for r in rows:
        if previous is not None and r["env"] != previous:
            table.add_section()
        previous = r["env"]
        if r["error"]:
            cells = ["[red]FAILED[/red] (see notes)", "", "", "", "", "", ""]
        else:
            cells = [
                fmt_rate(r["steps_per_s"]),
                fmt_rate(r["core_steps_per_s"]),
                "-" if r["compile_s"] is None else f"{r['compile_s']:.1f}",
                fmt_ratio(r["vs_anytrading"]),
                fmt_ratio(r["vs_minimal"]),
                fmt_ratio(r["vs_minimal_compiled"]),
                fmt_ratio(r["core_vs_minimal"]),
            ]
        variant = f"{r['variant']} (default)" if r.get("default") else r["variant"]
        table.add_row(r["env"], r["device"], str(r["num_envs"]), variant, *cells)
    console.print(table)
    for t in meta.get("targets", []):
        what = (
            "x gym-anytrading"
            if t["measure"] == "vs_anytrading"
            else " of the minimal compiled env"
        )
        line = f"target default dual_ticker at {t['num_envs']} envs >= {t['target']:g}{what}: "
        if t["value"] is None:
            line += "not measured"
        else:
            verdict = "[green]met[/green]" if t["met"] else "[red]NOT met[/red]"
            pair = t.get("paired")
            how = ""
            if pair is not None:
                rounds = len(pair["ratios"])
                how = f" (median of {rounds} paired rounds, range {pair['low']:.2f}-"
                how += f"{pair['high']:.2f}; the table's windows: "
                how += "-" if t["window"] is None else f"{t['window']:.2f}"
                how += ")"
            line += f"{t['value']:.2f}{how} — {verdict}"
        console.print(line, highlight=False)
    for i, note in enumerate(notes, 1):
        console.print(f"[dim]{i}. {note}[/dim]", highlight=False)


# --------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", type=Path, help="write every row and the metadata to this file")
    p.add_argument("--quick", action="store_true", help="smoke run: num_envs 1,4096, 0.5 s each")
    p.add_argument("--envs", help="comma-separated batch sizes (default 1,64,4096,65536)")
    p.add_argument("--seconds", type=float, help="timing per measurement (default 2, quick 0.5)")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="torch intra-op threads")
    add_keep_freed_argument(p)
    p.add_argument(
        "--compile-min-envs",
        type=int,
        default=1,
        help="compile variants only at num_envs >= this (compiles cost ~5-20 s each)",
    )
    p.add_argument(
        "--rounds",
        type=int,
        default=5,
        help="paired rounds of the targets' ratios (default dual_ticker against the compiled "
        "minimal env, alternating windows of --seconds/2 each; 0 = the table's ratios)",
    )
    p.add_argument(
        "--warm-compile-cache",
        action="store_true",
        help="reuse the default inductor cache (else a fresh one: compile s is a cold compile)",
    )
    args = p.parse_args(argv)
    default_envs = "1,4096" if args.quick else "1,64,4096,65536"
    args.num_envs = [int(x) for x in (args.envs or default_envs).split(",") if x.strip()]
    args.seconds = args.seconds if args.seconds is not None else (0.5 if args.quick else 2.0)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cache = None
    if not args.warm_compile_cache:
        cache = tempfile.mkdtemp(prefix="env_bench_inductor_")
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache
        os.environ["TRITON_CACHE_DIR"] = os.path.join(cache, "triton")
    warnings.filterwarnings("ignore")  # gymnasium's passive checker, reward-scale warnings
    from experiments.runtime.allocator import keep_freed_memory

    # A run of the app keeps freed memory for reuse (hardware.keep_freed_mib); so does this
    # process, for every row (ours, the peers and the minimal env alike).
    keep_freed_mib = keep_freed_setting(args.keep_freed_mib)
    kept = keep_freed_memory(keep_freed_mib)
    torch.set_num_threads(max(1, args.threads))
    torch.manual_seed(0)
    import torchrl

    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    meta = {
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "torchrl": torchrl.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "processor": platform.processor() or None,
        "devices": devices,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "num_envs": args.num_envs,
        "seconds": args.seconds,
        "compile_min_envs": args.compile_min_envs,
        "cold_compile_cache": cache is not None,
        "keep_freed_mib": keep_freed_mib if kept else None,
        "load_average_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
    log(f"devices {devices}, num_envs {args.num_envs}, {args.seconds} s per measurement")

    md = SyntheticSource(tickers=["NVDA", "MSFT"], bar_size="15min", seed=0, cache_dir=None).build()
    md8 = SyntheticSource(
        tickers=PORTFOLIO_TICKERS, bar_size="15min", seed=0, cache_dir=None
    ).build()
    prices = np.asarray(md.market.close[:, 0], dtype=np.float64)
    returns = torch.zeros(len(prices), dtype=torch.float32)
    returns[1:] = torch.as_tensor(prices[1:] / prices[:-1] - 1.0, dtype=torch.float32)
    cfgs = env_configs()
    ours = {
        "single_ticker": (single_column(md.market, 0), md.split.train, cfgs["single_ticker"]),
        "dual_ticker": (md.market, md.split.train, cfgs["dual_ticker"]),
        "portfolio": (md8.market, md8.split.train, cfgs["portfolio"]),
    }
    meta["data"] = {
        "bars": md.market.num_bars,
        "train_span": list(md.split.train),
        "portfolio_train_span": list(md8.split.train),
    }

    # Pay inductor's one-off start-up on a toy graph, so each row's compile s is its own.
    start = time.perf_counter()
    torch.compile(lambda x: x * 2 + 1, dynamic=False)(torch.zeros(8))
    meta["inductor_startup_s"] = time.perf_counter() - start
    torch._dynamo.reset()
    log(f"inductor start-up {meta['inductor_startup_s']:.1f} s")

    rows: list[dict] = []

    def done(r: dict) -> None:
        rows.append(r)
        what = f"{r['env']} {r['device']} n={r['num_envs']} {r['variant']}"
        if r["error"]:
            log(f"{what}: FAILED {r['error']}")
        else:
            extra = f", compile {r['compile_s']:.1f} s" if r["compile_s"] is not None else ""
            core = fmt_rate(r["core_steps_per_s"])
            log(f"{what}: {fmt_rate(r['steps_per_s'])} steps/s (core {core}){extra}")

    for r in bench_anytrading(prices, args.seconds):
        done(r)
    skipped_compile = []
    for device in devices:
        for n in (1, 64):
            done(bench_financial_regime(n, device, args.seconds))
        for compiled in (False, True):
            for n in args.num_envs:
                if compiled and n < args.compile_min_envs:
                    skipped_compile.append(n)
                    continue
                done(bench_minimal(returns, n, device, compiled, args.seconds))
        for name, (market, span, cfg) in ours.items():
            for n in args.num_envs:
                # The default path (env.compile=auto), then the other one, forced.
                minimum = int(cfg.get("compile_min_envs", 512))
                auto, _ = compile_choice("auto", n, device, minimum)
                done(bench_ours(name, market, span, cfg, n, device, "auto", args.seconds))
                other = not auto
                if other and n < args.compile_min_envs:
                    continue
                done(bench_ours(name, market, span, cfg, n, device, other, args.seconds))

    paired = []
    if args.rounds > 0:
        market, span, cfg = ours["dual_ticker"]
        sizes = [n for n, measure, _ in TARGETS if measure == "vs_minimal_compiled"]
        for n in [n for n in args.num_envs if n in sizes]:
            paired.append(
                bench_paired(market, span, cfg, returns, n, args.seconds / 2, args.rounds)
            )
    meta["paired_rounds"] = paired
    add_ratios(rows)
    meta["targets"] = check_targets(rows, paired)
    order = {"ours": 0, "minimal": 1, "anytrading": 2, "torchrl": 3}
    rows.sort(
        key=lambda r: (
            order.get(r["env"].split(" ")[0], 9),
            r["env"],
            r["device"],
            r["num_envs"],
            not r.get("default"),
        )
    )
    total = time.perf_counter() - T0
    meta["total_s"] = total
    meta["load_average_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None

    notes = [
        f"steps/s: env-steps per second summed over the batch (the best of {CHUNKS} chunks of "
        "each timing window; window means in the JSON), through TorchRL's "
        "env.step_and_maybe_reset (gym rows: env.step + reset on done). core: our "
        "env.advance(action) / FinancialRegimeEnv._step / gym-anytrading's unwrapped env.",
        "compile s: ours, the env's own timing of its first compiled reset, step and restart "
        "(env.compile_seconds, inductor's start-up included); "
        "the minimal env, warm-up wall time minus steady-state time for the same calls"
        + (" (fresh inductor cache: cold compiles)." if cache else " (reused inductor cache)."),
        "variant (default): the path of the config as it is (env.compile=auto: compiled from "
        "env.compile_min_envs envs on a CPU, always on a GPU); the other variant is forced.",
        "vs minimal: against the minimal torch function at the same device, num_envs and variant "
        "(gym and FinancialRegimeEnv rows against the eager one).",
        f"ours: every friction and risk rule on; data: synthetic NVDA/MSFT 15-min bars "
        f"({md.market.num_bars} bars, train span {md.split.train}); portfolio: 8 synthetic tickers.",
        "allocator: "
        + (
            f"every row keeps up to {keep_freed_mib} MiB of freed memory for reuse, as a run of "
            "the app does (hardware.keep_freed_mib; --keep-freed-mib none for glibc's defaults)."
            if kept
            else "glibc's defaults (--keep-freed-mib none, or a C library other than glibc)."
        ),
    ]
    if skipped_compile:
        notes.append(
            f"compiled variants skipped at num_envs < {args.compile_min_envs} "
            f"({sorted(set(skipped_compile))}) to keep the run within budget."
        )
    load = meta["load_average_start"]
    if load and load[0] > 0.5 * (os.cpu_count() or 1):
        hint = (
            "multi-threaded numbers are noisy; --threads 1 is steadier"
            if meta["torch_threads"] > 1
            else "numbers may be noisy"
        )
        notes.append(
            f"the machine was busy at the start (load average {load[0]:.2f} "
            f"on {os.cpu_count()} cores): {hint}."
        )
    for r in rows:
        if r["error"]:
            notes.append(f"FAILED {r['env']} {r['device']} num_envs={r['num_envs']}: {r['error']}")
    notes.append(
        f"total run time {total:.0f} s (inductor start-up {meta['inductor_startup_s']:.1f} s)."
    )
    print_table(rows, meta, notes)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"meta": meta, "notes": notes, "rows": rows}, indent=2))
        log(f"wrote {args.json}")
    if cache:
        shutil.rmtree(cache, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
