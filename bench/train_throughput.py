"""End-to-end training frames/s of our PPO and DQN agents beside Stable-Baselines3's PPO and
DQN on gym-anytrading ``stocks-v0``, all in one run, one process, the same torch threads.

What is measured: frames (env steps summed over the envs) per second of wall time of a whole
training call, after a short warm-up, so everything an iteration does is in it: collection
(env steps and policy forward passes), learning (advantages or replay sampling, losses,
backward passes, optimizer and target-network steps) and the framework's own overhead
(Lightning's loop and logging; SB3's callbacks and logger). One-off setup is not timed: the
market data, the env and agent construction, and the warm-up.

* **ours** — composed from ``conf/`` with Hydra's compose API (``env=single_ticker``: one
  asset, 3 discrete targets flat/long/short, frictions as configured), built with
  ``experiments.run.build.build_module`` on a synthetic market, trained on CPU through a plain
  ``pytorch_lightning.Trainer`` (no logger, no checkpoints, no progress bar, no validation;
  ``log_every_n_steps=1`` so the per-iteration ``self.log_dict`` work is included). The
  warm-up is a first ``trainer.fit`` of a few iterations; the timed run is a second
  ``trainer.fit`` of the same module (collector, env state, replay buffer carried over), and
  its frames are the growth of ``module.frames``.
* **SB3** — ``stable_baselines3`` PPO / DQN with ``MlpPolicy`` on ``gymnasium.make("stocks-v0")``
  (2 actions sell/buy, a 10-bar window of price and price change) over the NVDA closes of the
  same synthetic market's training split. The warm-up is a first ``model.learn``; the timed
  run is ``model.learn(N, reset_num_timesteps=False)``.

Fairness rules (the same work per frame on both sides, as far as the algorithms allow):

* equal networks: two hidden layers of 64, tanh. PPO: SB3 ``net_arch=dict(pi=[64, 64],
  vf=[64, 64])`` (separate actor and critic) vs our ``model.network.hidden_sizes=[64,64]``
  (actor and critic each own a trunk). DQN: SB3 ``net_arch=[64, 64]`` vs ours with
  ``model.network.dueling=false``.
* equal rollout length and sample reuse. PPO: 64 steps per env per iteration
  (SB3 ``n_steps=64`` on a ``DummyVecEnv`` of 8 envs; our ``model.collector.frames_per_env=64``),
  4 epochs over each batch (``n_epochs=4``; ``model.optim.epochs=4``,
  ``model.optim.critic_epochs=0``, ``model.optim.target_kl=null`` so no early stop skews it).
  Minibatches differ by design and are shown: SB3 at its default-like ``batch_size=64`` and
  again at its largest, its whole 512-frame rollout; ours at ``model.optim.minibatch_size``
  (``--minibatch``, default auto: a quarter of an iteration's frames, as the app's default)
  with ``env.num_envs`` 64 and 1024 (batching envs is the point of the framework). DQN: 8 replayed transitions per
  collected frame on both sides: SB3 ``train_freq=4, gradient_steps=1, batch_size=32`` on one
  env; ours ``model.replay.batch_size=512, model.optim.updates_per_frame=0.015625`` on
  ``env.num_envs=64`` (16 frames per env per iteration); ``learning_starts=1000`` and a
  100k-transition buffer for both. Our DQN runs as configured (prioritized replay, 3-step
  returns, double DQN) and, in an extra row, SB3's algorithm (uniform replay, 1-step, no
  double DQN).
* no row pays torch's NVML-based CUDA check at each optimizer step (Lightning's import turns
  it on; on a machine without NVML it is a failed ``dlopen`` per call, which SB3 run alone
  never makes): it is turned off before the first row where NVML cannot be loaded
  (``experiments.runtime.hardware.skip_a_failing_nvml_check``; ``nvml_check_skipped`` in the
  JSON).
* every row runs with the app's allocator setting (``hardware.keep_freed_mib`` of
  ``conf/hardware/cpu.yaml``: freed memory kept for reuse, ``experiments.runtime.allocator``;
  ``--keep-freed-mib none`` for glibc's defaults; ``keep_freed_mib`` in the JSON).
* the same process and machine; SB3 at ``torch.set_num_threads(--threads)`` (default 2),
  ours at the app's policy for agents (1 thread below 512 envs on CPU, else the same).

Columns: *mb* (frames per gradient step; SB3's is capped at its rollout size), *upd/kf*
(gradient steps per 1000 collected frames), *reuse* (PPO: passes over each frame; DQN:
replayed transitions per collected frame), *frames*, *seconds*, *frames/s*, *c/l/o %* (the
shares of the time spent collecting, learning, and in the rest of the loop), *vs SB3* =
frames/s over the SB3 row of the same algorithm at its default-like settings (PPO batch 64),
*vs same mb* = our PPO over SB3 PPO at our minibatch size, and *quiet f/s* / *quiet vs*: the
same over the parts of the run the rest of the machine left alone (see below). The targets
of the issue (our PPO >= 25x SB3 PPO, our DQN >= 10x SB3 DQN) are checked under the table.

Run (from the repository root, in the venv with the ``bench`` extra installed)::

    python bench/train_throughput.py                    # full run, ~6 minutes on 2 quiet cores
    python bench/train_throughput.py --quick            # smoke run, 1-2 minutes
    python bench/train_throughput.py --json /tmp/train_bench.json --threads 1

Other processes on a small machine distort every number here (torch's worker threads wait
for descheduled peers); each measurement waits up to ``--wait-idle`` seconds for the rest of
the machine to go quiet first, the CPU share taken by other processes during each timed
window is recorded (``others_cpu`` in the JSON) and flagged under the table, a run that was
disturbed is measured again (``--retries``; the least disturbed run is kept), and each run is also cut at iteration
boundaries into chunks of >= 1 s whose quiet ones give *quiet f/s*. A target's verdict uses
the whole-run ratio when neither run was disturbed, else the quiet chunks' ratio, else it is
reported as inconclusive.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from allocator_option import add_keep_freed_argument, keep_freed_setting

OURS, SB3 = "ours", "SB3"
ANYTRADING_WINDOW = 10  # stocks-v0 observation window (bars)
LEARNING_STARTS = 1000  # DQN: random-action frames before the first update (both sides)
REPLAY_SIZE = 100_000  # DQN: transitions kept (both sides)
SB3_PPO_ENVS, SB3_PPO_STEPS, PPO_EPOCHS = 8, 64, 4
SB3_DQN_TRAIN_FREQ, SB3_DQN_BATCH = 4, 32
OUR_DQN_BATCH, OUR_DQN_UPDATES_PER_FRAME, OUR_DQN_FRAMES_PER_ENV = 512, 0.015625, 16
TARGETS = {"ppo": 25.0, "dqn": 10.0}  # the issue's targets: ours / SB3 frames/s
# Row variants (explained under the table).
SB3_DEFAULT_MB, SB3_OUR_MB = "default mb", "our mb"  # SB3 PPO batch_size 64 / = ours
DQN_CONFIGURED = "configured"  # prioritized replay, 3-step returns, double DQN
DQN_SB3_LIKE = "SB3-like"  # uniform replay, 1-step returns, no double DQN
BUSY = 0.10  # others' share of the machine's CPU above which a row is flagged

T0 = time.perf_counter()


def log(msg: str) -> None:
    print(f"[{time.perf_counter() - T0:6.1f}s] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- budgets
@dataclasses.dataclass(frozen=True)
class Budget:
    """Frames per measurement. Ours: whole iterations, at least ``min_iters``."""

    sb3_ppo: int
    sb3_ppo_warm: int
    sb3_dqn: int
    sb3_dqn_warm: int  # beyond LEARNING_STARTS
    ours_ppo: int
    ours_dqn: int
    ours_warm_iters: int
    min_iters: int
    sessions: int  # synthetic market size


FULL = Budget(
    sb3_ppo=30_720,  # 60 rollouts of 8 x 64
    sb3_ppo_warm=1_024,
    sb3_dqn=20_000,
    sb3_dqn_warm=500,
    ours_ppo=262_144,  # 64 iterations at 64 envs, 4 at 1024 envs
    ours_dqn=204_800,  # 200 iterations of 64 x 16
    ours_warm_iters=2,
    min_iters=2,
    sessions=600,
)
QUICK = Budget(
    sb3_ppo=1_024,
    sb3_ppo_warm=512,
    sb3_dqn=400,
    sb3_dqn_warm=100,
    ours_ppo=8_192,
    ours_dqn=4_096,
    ours_warm_iters=1,
    min_iters=1,
    sessions=120,
)


# --------------------------------------------------------------------------- CPU contention
def _cpu_jiffies() -> tuple[int, int] | None:
    """(total, idle) jiffies of the whole machine from /proc/stat, or None off Linux."""
    try:
        with open("/proc/stat") as f:
            values = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    return sum(values), values[3] + values[4]  # idle + iowait


class CpuWindow:
    """The share of the machine's CPU used by *other* processes over a window: the machine's
    busy time (``/proc/stat``) minus this process's CPU time, over wall time x cores."""

    def __init__(self) -> None:
        self.start = _cpu_jiffies()
        self.own = time.process_time()

    def others(self) -> float | None:
        end = _cpu_jiffies()
        if self.start is None or end is None:
            return None
        total = end[0] - self.start[0]
        if total <= 0:
            return None
        busy = total - (end[1] - self.start[1])
        hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        own = (time.process_time() - self.own) * hz
        return min(1.0, max(0.0, (busy - own) / total))


class Chunks:
    """A timed run cut at iteration boundaries into chunks of at least ``min_seconds``, each
    with its frames, wall time and the CPU share other processes took: the frames/s over the
    quiet chunks is the rate a shared machine would have given undisturbed."""

    def __init__(self, frames: int, min_seconds: float = 1.0) -> None:
        self.min_seconds = min_seconds
        self.items: list[tuple[int, float, float | None]] = []
        self._open(frames)

    def _open(self, frames: int) -> None:
        self.frames, self.start, self.window = frames, time.perf_counter(), CpuWindow()

    def tick(self, frames: int, last: bool = False) -> None:
        """An iteration boundary, ``frames`` collected so far; ``last`` closes the run."""
        now = time.perf_counter()
        if last or now - self.start >= self.min_seconds:
            self.items.append((frames - self.frames, now - self.start, self.window.others()))
            self._open(frames)

    def quiet(self, min_share: float = 0.25) -> tuple[float | None, float]:
        """(frames/s over the chunks where others took under BUSY of the CPU, or None when
        those cover under ``min_share`` of the run; the share of the run they cover)."""
        total = sum(s for _, s, _ in self.items)
        calm = [(f, s) for f, s, o in self.items if o is not None and o < BUSY]
        calm_s = sum(s for _, s in calm)
        share = calm_s / total if total > 0 else 0.0
        if not calm or calm_s <= 0 or share < min_share:
            return None, share
        return sum(f for f, _ in calm) / calm_s, share


class Phases:
    """Wall time spent inside named methods of an object (instance attributes shadow them)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def wrap(self, obj, method: str, phase: str) -> None:
        inner = getattr(obj, method)
        self.seconds.setdefault(phase, 0.0)

        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                self.seconds[phase] += time.perf_counter() - start

        setattr(obj, method, timed)

    def split(self, total: float) -> dict[str, float]:
        """Shares of ``total`` seconds: each phase, and ``other`` (the framework's loop)."""
        out = {k: v / total for k, v in self.seconds.items()}
        out["other"] = max(0.0, 1.0 - sum(out.values()))
        return out


def wait_idle(max_wait: float, threshold: float = BUSY, quiet_for: float = 2.0) -> float:
    """Wait (up to ``max_wait`` s) until other processes use under ``threshold`` of the CPU
    for ``quiet_for`` seconds in a row; returns the seconds waited."""
    if max_wait <= 0 or _cpu_jiffies() is None:
        return 0.0
    start = time.perf_counter()
    quiet = 0.0
    while time.perf_counter() - start < max_wait:
        window = CpuWindow()
        time.sleep(0.5)
        share = window.others() or 0.0
        quiet = quiet + 0.5 if share < threshold else 0.0
        if quiet >= quiet_for:
            break
    waited = time.perf_counter() - start
    if waited > quiet_for + 1.0:
        log(f"waited {waited:.0f} s for other processes to go quiet")
    return waited


# --------------------------------------------------------------------------- rows
def row(system: str, algorithm: str, variant: str, num_envs: int, **values) -> dict:
    base = {
        "system": system,
        "algorithm": algorithm,
        "variant": variant,
        "num_envs": num_envs,
        "minibatch": None,
        "updates_per_kframe": None,
        "reuse": None,
        "frames": None,
        "seconds": None,
        "frames_per_s": None,
        "others_cpu": None,
        "time_split": None,
        "quiet_frames_per_s": None,
        "quiet_share": None,
        "chunks": None,
        "attempts": 1,
        "settings": {},
        "error": None,
    }
    return {**base, **values}


def measured(frames: int, seconds: float, others, phases: Phases, chunks: Chunks) -> dict:
    """The row values of one timed run."""
    quiet, share = chunks.quiet()
    return {
        "frames": int(frames),
        "seconds": seconds,
        "frames_per_s": frames / seconds,
        "others_cpu": others,
        "time_split": phases.split(seconds),
        "quiet_frames_per_s": quiet,
        "quiet_share": share,
        "chunks": [{"frames": f, "seconds": s, "others_cpu": o} for f, s, o in chunks.items],
    }


def label(r: dict) -> str:
    variant = f" {r['variant']}" if r["variant"] else ""
    return f"{r['system']} {r['algorithm'].upper()}{variant}, {r['num_envs']} envs"


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:200]}"


def fmt_rate(x: float | None) -> str:
    if x is None:
        return "-"
    for unit, scale in (("M", 1e6), ("k", 1e3)):
        if x >= scale:
            return f"{x / scale:.3g} {unit}"
    return f"{x:.3g}"


def fmt_ratio(x: float | None) -> str:
    return "-" if x is None else f"{x:.3g}x"


def fmt_num(x: float | None, digits: int = 3) -> str:
    if x is None:
        return "-"
    return f"{x:,}" if isinstance(x, int) else f"{x:.{digits}g}"


def fmt_split(split: dict | None) -> str:
    if not split:
        return "-"
    return "/".join(f"{100 * split.get(k, 0.0):.0f}" for k in ("collect", "learn", "other"))


# --------------------------------------------------------------------------- ours
def compose(algorithm: str, overrides: list[str]):
    """The run config of ``+model=ALGORITHM`` with ``overrides``, composed as the app does."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from experiments.config.groups import CONF_DIR
    from experiments.config.resolvers import register_resolvers

    register_resolvers()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return hydra_compose(
            "config",
            overrides=[f"+model={algorithm}", "logger=none", "paths.cache_dir=null", *overrides],
        )


def build_data(sessions: int, seed: int):
    """The synthetic market every row runs on (ours directly, SB3 through its closes)."""
    from hydra.utils import instantiate

    cfg = compose("ppo", [f"data.synthetic.sessions={sessions}", f"seed={seed}"])
    return instantiate(cfg.data).build(), cfg


def ppo_overrides(num_envs: int, minibatch: int) -> list[str]:
    return [
        f"env.num_envs={num_envs}",
        "model.network.hidden_sizes=[64,64]",
        "model.network.activation=tanh",
        f"model.collector.frames_per_env={SB3_PPO_STEPS}",
        f"model.optim.epochs={PPO_EPOCHS}",
        "model.optim.critic_epochs=0",
        "model.optim.target_kl=null",
        f"model.optim.minibatch_size={minibatch}",
    ]


def dqn_overrides(num_envs: int, sb3_like: bool) -> list[str]:
    out = [
        f"env.num_envs={num_envs}",
        "model.network.hidden_sizes=[64,64]",
        "model.network.activation=tanh",
        "model.network.dueling=false",
        f"model.collector.frames_per_env={OUR_DQN_FRAMES_PER_ENV}",
        f"model.collector.learning_starts={LEARNING_STARTS}",
        f"model.replay.batch_size={OUR_DQN_BATCH}",
        f"model.replay.size={REPLAY_SIZE}",
        f"model.optim.updates_per_frame={OUR_DQN_UPDATES_PER_FRAME}",
        # The learning step as one graph (compiled in the warm-up, 2-5 s); the default, auto,
        # would keep a run this short eager (model.optim.compile_min_updates).
        "model.optim.compile=true",
    ]
    if sb3_like:
        out += [
            "model.replay.prioritized=false",
            "model.loss.n_steps=1",
            "model.loss.double_dqn=false",
        ]
    return out


def _trainer(max_epochs: int, accelerator: str, chunks: Chunks | None = None):
    import pytorch_lightning as pl

    class Tick(pl.Callback):
        def on_train_epoch_end(self, trainer, module) -> None:
            chunks.tick(module.frames)

    return pl.Trainer(
        callbacks=[Tick()] if chunks is not None else [],
        accelerator=accelerator,
        devices=1,
        max_epochs=max_epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        check_val_every_n_epoch=max_epochs + 1,  # no validation inside the timed fit
        log_every_n_steps=1,
    )


def bench_ours(
    algorithm: str,
    variant: str,
    overrides: list[str],
    data,
    budget: Budget,
    seed: int,
    wait: float,
) -> dict:
    import pytorch_lightning as pl

    from experiments.run.build import build_module
    from experiments.runtime.hardware import resolve_hardware

    num_envs = int(next(o for o in overrides if o.startswith("env.num_envs=")).split("=")[1])
    try:
        cfg = compose(algorithm, [*overrides, f"seed={seed}", "model.collector.iterations=1"])
        per_iter = num_envs * int(cfg.model.collector.frames_per_env)
        frames = budget.ours_ppo if algorithm == "ppo" else budget.ours_dqn
        iters = max(budget.min_iters, math.ceil(frames / per_iter))
        warm_iters = budget.ours_warm_iters
        if algorithm == "dqn":  # warm up past learning_starts, so every timed iteration learns
            warm_iters = max(warm_iters, math.ceil(LEARNING_STARTS / per_iter) + 1)
        cfg = compose(
            algorithm,
            [*overrides, f"seed={seed}", f"model.collector.iterations={warm_iters + iters}"],
        )
        hardware = resolve_hardware(cfg.hardware)
        device = hardware.device
        accelerator = "gpu" if device.type == "cuda" else "cpu"
        pl.seed_everything(seed, verbose=False)
        module, _ = build_module(cfg, hardware, Path("."), data=data)
        # The app's thread policy for agents (1 thread below 512 envs on CPU); SB3's rows run
        # with --threads.
        if module.threads is not None:
            torch.set_num_threads(module.threads)
        _trainer(warm_iters, accelerator).fit(module)
        frames0 = module.frames
        updates0 = getattr(module, "updates", 0)
        phases = Phases()
        phases.wrap(module, "collect", "collect")
        phases.wrap(module, "learn", "learn")
        wait_idle(wait)
        window = CpuWindow()
        chunks = Chunks(frames0)
        trainer = _trainer(iters, accelerator, chunks)
        start = time.perf_counter()
        trainer.fit(module)
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        others = window.others()
        chunks.tick(module.frames, last=True)
        done = module.frames - frames0
        settings = {"overrides": overrides, "iterations": iters, "warmup_iterations": warm_iters}
        if algorithm == "ppo":
            optim = module.optim_cfg
            minibatch = min(int(optim.minibatch_size), per_iter)
            updates_per_iter = optim.epochs * math.ceil(per_iter / minibatch)
            updates_per_kframe = 1000.0 * updates_per_iter / per_iter
            reuse = float(optim.epochs)
            settings.update(dataclasses.asdict(optim))
        else:
            minibatch = int(module.replay_cfg.batch_size)
            updates = module.updates - updates0
            updates_per_kframe = 1000.0 * updates / max(done, 1)
            reuse = updates * minibatch / max(done, 1)
            settings.update(
                {
                    "replay": dataclasses.asdict(module.replay_cfg),
                    "loss": dataclasses.asdict(module.loss_cfg),
                    "updates": updates,
                }
            )
        return row(
            OURS,
            algorithm,
            variant,
            num_envs,
            minibatch=minibatch,
            updates_per_kframe=updates_per_kframe,
            reuse=reuse,
            settings=settings,
            **measured(done, seconds, others, phases, chunks),
        )
    except Exception as exc:  # record, do not crash the run
        return row(OURS, algorithm, variant, num_envs, error=_short(exc))


# --------------------------------------------------------------------------- SB3
def anytrading_maker(prices: np.ndarray):
    import gym_anytrading  # noqa: F401  (registers stocks-v0)
    import gymnasium
    import pandas as pd

    df = pd.DataFrame({"Close": prices.astype(np.float64)})

    def make():
        return gymnasium.make(
            "stocks-v0",
            df=df,
            window_size=ANYTRADING_WINDOW,
            frame_bound=(ANYTRADING_WINDOW, len(prices)),
        )

    return make


def _sb3_timed(model, frames: int, wait: float) -> dict:
    """The row values of a timed ``model.learn(frames)`` (continuing the warm-up's run)."""
    from stable_baselines3.common.callbacks import BaseCallback

    class Tick(BaseCallback):
        def _on_step(self) -> bool:
            return True

        def _on_rollout_start(self) -> None:  # PPO: after each update; DQN: every train_freq
            chunks.tick(self.model.num_timesteps)

    phases = Phases()
    phases.wrap(model, "collect_rollouts", "collect")
    phases.wrap(model, "train", "learn")
    before = model.num_timesteps
    wait_idle(wait)
    window = CpuWindow()
    chunks = Chunks(before)
    start = time.perf_counter()
    model.learn(frames, callback=Tick(), reset_num_timesteps=False, progress_bar=False)
    seconds = time.perf_counter() - start
    others = window.others()
    chunks.tick(model.num_timesteps, last=True)
    return measured(model.num_timesteps - before, seconds, others, phases, chunks)


def bench_sb3_ppo(
    make, batch_size: int, variant: str, budget: Budget, seed: int, wait: float
) -> dict:
    try:
        from stable_baselines3 import PPO
        from stable_baselines3.common.vec_env import DummyVecEnv

        venv = DummyVecEnv([make for _ in range(SB3_PPO_ENVS)])
        rollout = SB3_PPO_ENVS * SB3_PPO_STEPS
        model = PPO(
            "MlpPolicy",
            venv,
            n_steps=SB3_PPO_STEPS,
            n_epochs=PPO_EPOCHS,
            batch_size=batch_size,
            policy_kwargs={
                "net_arch": {"pi": [64, 64], "vf": [64, 64]},
                "activation_fn": torch.nn.Tanh,
            },
            device="cpu",
            seed=seed,
            verbose=0,
        )
        model.learn(budget.sb3_ppo_warm, progress_bar=False)
        values = _sb3_timed(model, budget.sb3_ppo, wait)
        minibatch = min(batch_size, rollout)
        updates_per_rollout = PPO_EPOCHS * math.ceil(rollout / minibatch)
        venv.close()
        return row(
            SB3,
            "ppo",
            variant,
            SB3_PPO_ENVS,
            minibatch=minibatch,
            updates_per_kframe=1000.0 * updates_per_rollout / rollout,
            reuse=float(PPO_EPOCHS),
            **values,
            settings={
                "n_steps": SB3_PPO_STEPS,
                "n_envs": SB3_PPO_ENVS,
                "n_epochs": PPO_EPOCHS,
                "batch_size": batch_size,
                "net_arch": {"pi": [64, 64], "vf": [64, 64]},
                "activation_fn": "Tanh",
            },
        )
    except Exception as exc:
        return row(SB3, "ppo", variant, SB3_PPO_ENVS, error=_short(exc))


def bench_sb3_dqn(make, budget: Budget, seed: int, wait: float) -> dict:
    try:
        from stable_baselines3 import DQN
        from stable_baselines3.common.vec_env import DummyVecEnv

        venv = DummyVecEnv([make])
        model = DQN(
            "MlpPolicy",
            venv,
            train_freq=SB3_DQN_TRAIN_FREQ,
            gradient_steps=1,
            batch_size=SB3_DQN_BATCH,
            learning_starts=LEARNING_STARTS,
            buffer_size=REPLAY_SIZE,
            policy_kwargs={"net_arch": [64, 64], "activation_fn": torch.nn.Tanh},
            device="cpu",
            seed=seed,
            verbose=0,
        )
        model.learn(LEARNING_STARTS + budget.sb3_dqn_warm, progress_bar=False)
        updates0 = model._n_updates
        values = _sb3_timed(model, budget.sb3_dqn, wait)
        updates, done = model._n_updates - updates0, values["frames"]
        venv.close()
        return row(
            SB3,
            "dqn",
            "default",
            1,
            minibatch=SB3_DQN_BATCH,
            updates_per_kframe=1000.0 * updates / max(done, 1),
            reuse=updates * SB3_DQN_BATCH / max(done, 1),
            **values,
            settings={
                "train_freq": SB3_DQN_TRAIN_FREQ,
                "gradient_steps": 1,
                "batch_size": SB3_DQN_BATCH,
                "learning_starts": LEARNING_STARTS,
                "buffer_size": REPLAY_SIZE,
                "net_arch": [64, 64],
                "activation_fn": "Tanh",
                "updates": updates,
            },
        )
    except Exception as exc:
        return row(SB3, "dqn", "", 1, error=_short(exc))


# --------------------------------------------------------------------------- report
def add_ratios(rows: list[dict], minibatch: int) -> None:
    """Ratios over the SB3 row of the same algorithm (PPO: batch_size 64), whole-run and over
    the quiet chunks; our PPO also over SB3 PPO at our minibatch size."""
    sb3 = [r for r in rows if r["system"] == SB3 and r["frames_per_s"] is not None]
    ref = {alg: reference(rows, alg) for alg in TARGETS}
    same_mb = next(
        (r for r in sb3 if r["algorithm"] == "ppo" and r["variant"] == SB3_OUR_MB),
        None,
    )

    def ratio(r: dict, base: dict | None, key: str) -> float | None:
        if base is None or r[key] is None or not base[key]:
            return None
        return r[key] / base[key]

    for r in rows:
        base = ref.get(r["algorithm"])
        mb = same_mb if (r["system"], r["algorithm"]) == (OURS, "ppo") else None
        r["vs_sb3"] = ratio(r, base, "frames_per_s")
        r["vs_sb3_same_mb"] = ratio(r, mb, "frames_per_s")
        r["quiet_vs_sb3"] = ratio(r, base, "quiet_frames_per_s")
        r["quiet_vs_sb3_same_mb"] = ratio(r, mb, "quiet_frames_per_s")


def contended(r: dict) -> bool:
    """Other processes took over BUSY of the CPU during the row's timed run."""
    return (r["others_cpu"] or 0.0) > BUSY


def reference(rows: list[dict], algorithm: str) -> dict | None:
    """The SB3 row ratios are taken against: the first of the algorithm (PPO: batch 64)."""
    return next(
        (
            r
            for r in rows
            if (r["system"], r["algorithm"]) == (SB3, algorithm) and r["frames_per_s"]
        ),
        None,
    )


def check_targets(rows: list[dict]) -> list[dict]:
    """Per algorithm: our best row (the configured DQN, not the SB3-like one) against the SB3
    reference row. The whole-run ratio counts when neither run was contended; otherwise the
    ratio of the quiet chunks' rates; with neither, the verdict is None (inconclusive)."""
    out = []
    for algorithm, target in TARGETS.items():
        ref = reference(rows, algorithm)
        ours = [
            r
            for r in rows
            if (r["system"], r["algorithm"]) == (OURS, algorithm)
            and r["vs_sb3"] is not None
            and r["variant"] != DQN_SB3_LIKE
        ]
        judged = []
        for r in ours:
            if not contended(r) and not contended(ref):
                judged.append((r["vs_sb3"], "whole run", r["vs_sb3_same_mb"], r))
            elif r["quiet_vs_sb3"] is not None:
                judged.append((r["quiet_vs_sb3"], "quiet chunks", r["quiet_vs_sb3_same_mb"], r))
        if judged:
            ratio, basis, same_mb, best = max(judged, key=lambda j: j[0])
        else:
            best = max(ours, key=lambda r: r["vs_sb3"], default=None)
            ratio, basis, same_mb = None, "contended" if best else None, None
        out.append(
            {
                "algorithm": algorithm,
                "target": target,
                "row": label(best) if best else None,
                "ratio": ratio,
                "basis": basis,
                "ratio_same_minibatch": same_mb,
                "whole_run_ratio": best["vs_sb3"] if best else None,
                "met": None if ratio is None else bool(ratio >= target),
            }
        )
    return out


def print_table(rows: list[dict], meta: dict, notes: list[str], targets: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not console.is_terminal:
        console = Console(width=170)
    title = (
        f"Training throughput, end to end — {meta['cpu_cores']} CPU cores "
        f"({meta['torch_threads']} torch thread(s)), torch {meta['torch']}, torchrl "
        f"{meta['torchrl']}, lightning {meta['lightning']}, SB3 {meta['sb3']}, "
        f"gym-anytrading {meta['gym_anytrading']}"
    )
    caption = (
        "Fairness: equal networks (2x64 tanh; PPO actor and critic separate; DQN not dueling); "
        f"PPO {SB3_PPO_STEPS} steps per env per iteration and {PPO_EPOCHS} epochs on both sides "
        "(ours: no critic-only epochs, no KL early stop); DQN 8 replayed transitions per frame on "
        f"both sides, learning_starts {LEARNING_STARTS}, replay {REPLAY_SIZE:,}; same process "
        "(SB3 at --threads torch threads, ours at the app's agent policy: 1 below 512 envs); "
        "warm-up excluded, every per-iteration cost included (our DQN's update compiled, "
        "model.optim.compile=true, in the warm-up). Ours: env "
        "single_ticker on a synthetic market, frictions as configured; SB3: stocks-v0 over the "
        "same closes."
    )
    table = Table(title=title, title_justify="left", caption=caption, caption_justify="left")
    for col, kw in (
        ("system", {}),
        ("algo", {}),
        ("variant", {}),
        ("envs", {"justify": "right"}),
        ("mb", {"justify": "right"}),
        ("upd/kf", {"justify": "right"}),
        ("reuse", {"justify": "right"}),
        ("frames", {"justify": "right"}),
        ("seconds", {"justify": "right"}),
        ("frames/s", {"justify": "right"}),
        ("c/l/o %", {"justify": "right"}),
        ("vs SB3", {"justify": "right"}),
        ("vs same mb", {"justify": "right"}),
        ("quiet f/s", {"justify": "right"}),
        ("quiet vs", {"justify": "right"}),
    ):
        table.add_column(col, **kw)
    previous = None
    for r in rows:
        if previous is not None and r["algorithm"] != previous:
            table.add_section()
        previous = r["algorithm"]
        flag = " *" if (r["others_cpu"] or 0.0) > BUSY else ""
        if r["error"]:
            cells = ["[red]FAILED[/red] (see notes)"] + [""] * 10
        else:
            cells = [
                str(r["minibatch"]),
                fmt_num(r["updates_per_kframe"]),
                fmt_num(r["reuse"], 2),
                f"{r['frames']:,}",
                f"{r['seconds']:.1f}",
                fmt_rate(r["frames_per_s"]) + flag,
                fmt_split(r["time_split"]),
                fmt_ratio(r["vs_sb3"]),
                fmt_ratio(r["vs_sb3_same_mb"]),
                fmt_rate(r["quiet_frames_per_s"]),
                fmt_ratio(r["quiet_vs_sb3"]),
            ]
        table.add_row(r["system"], r["algorithm"].upper(), r["variant"], str(r["num_envs"]), *cells)
    console.print(table)
    for t in targets:
        name = t["algorithm"].upper()
        line = f"target {name} >= {t['target']:g}x SB3 {name}: "
        if t["row"] is None:
            line += "no result"
        elif t["ratio"] is None:
            line += (
                f"[yellow]inconclusive[/yellow] — {t['whole_run_ratio']:.2f}x ({t['row']}), but "
                "the machine was busy during these runs and no quiet chunks remain"
            )
        else:
            verdict = "[green]met[/green]" if t["met"] else "[red]NOT met[/red]"
            line += f"{t['ratio']:.2f}x ({t['row']}; {t['basis']}) — {verdict}"
            if t["ratio_same_minibatch"] is not None:
                line += f"; {t['ratio_same_minibatch']:.2f}x vs SB3 at the same minibatch"
        console.print(line, highlight=False)
    for i, note in enumerate(notes, 1):
        console.print(f"[dim]{i}. {note}[/dim]", highlight=False)


# --------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", type=Path, help="write every row and the metadata to this file")
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: a few iterations per row, a smaller market, our PPO at 64 and 256 envs",
    )
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads (all rows)")
    p.add_argument(
        "--minibatch",
        default="auto",
        help="our PPO model.optim.minibatch_size (default auto: a quarter of an iteration's "
        "frames); SB3's second PPO row uses it too, capped at its 512-frame rollout",
    )
    p.add_argument("--envs", help="comma-separated env.num_envs of our PPO rows (default 64,1024)")
    p.add_argument(
        "--algorithms",
        default="ppo,dqn",
        help="comma-separated algorithms to measure (default ppo,dqn: every row)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--wait-idle",
        type=float,
        help="seconds to wait for other processes to go quiet before each timed run "
        "(default 120, quick 0)",
    )
    p.add_argument(
        "--retries",
        type=int,
        help="measure a row again (up to this many times) when other processes took over 10%% "
        "of the CPU during its timed run; the least disturbed run is kept (default 2, quick 0)",
    )
    add_keep_freed_argument(p)
    args = p.parse_args(argv)
    if args.retries is None:
        args.retries = 0 if args.quick else 2
    default_envs = "64,256" if args.quick else "64,1024"
    args.num_envs = [int(x) for x in (args.envs or default_envs).split(",") if x.strip()]
    if args.wait_idle is None:
        args.wait_idle = 0.0 if args.quick else 120.0
    return args


def quiet_libraries() -> None:
    """No info lines from Lightning and TorchRL (both set their loggers' levels on import)."""
    import pytorch_lightning  # noqa: F401
    import torchrl  # noqa: F401

    warnings.filterwarnings("ignore")  # gymnasium's checker, SB3's minibatch remark, Lightning
    for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric", "torchrl"):
        logging.getLogger(name).setLevel(logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    budget = QUICK if args.quick else FULL
    quiet_libraries()
    torch.set_num_threads(max(1, args.threads))
    torch.manual_seed(args.seed)
    import gym_anytrading
    import pytorch_lightning
    import stable_baselines3
    import torchrl

    from experiments.runtime.allocator import keep_freed_memory
    from experiments.runtime.hardware import skip_a_failing_nvml_check

    # Importing Lightning turns on torch's NVML-based CUDA check, which on a machine without
    # NVML costs every optimizer step a failed dlopen; SB3 alone never pays it. Our runs turn
    # it off (resolve_hardware); turn it off before any row, so no row, SB3's or ours, pays.
    nvml_check_skipped = skip_a_failing_nvml_check()
    # A run of the app keeps freed memory for reuse (hardware.keep_freed_mib); so does this
    # process, for SB3's rows as for ours.
    keep_freed_mib = keep_freed_setting(args.keep_freed_mib)
    kept = keep_freed_memory(keep_freed_mib)
    meta = {
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "torchrl": torchrl.__version__,
        "lightning": pytorch_lightning.__version__,
        "sb3": stable_baselines3.__version__,
        "gym_anytrading": getattr(gym_anytrading, "__version__", None)
        or _version("gym-anytrading"),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "quick": args.quick,
        "budget": dataclasses.asdict(budget),
        "minibatch": args.minibatch,
        "seed": args.seed,
        "wait_idle": args.wait_idle,
        "retries": args.retries,
        "load_average_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "nvml_check_skipped": nvml_check_skipped,
        "keep_freed_mib": keep_freed_mib if kept else None,
        "git": _git_state(),
    }
    log(f"{'quick' if args.quick else 'full'} run, {meta['torch_threads']} torch thread(s)")

    data, _ = build_data(budget.sessions, args.seed)
    train = data.split.train
    prices = np.asarray(data.market.close[train[0] : train[1], 0], dtype=np.float64)
    make = anytrading_maker(prices)
    meta["data"] = {
        "sessions": budget.sessions,
        "bars": data.market.num_bars,
        "train_span": list(train),
        "ticker": data.market.tickers[0],
    }
    log(f"synthetic market: {data.market.num_bars} bars, train span {train}")

    seed, wait, mb = args.seed, args.wait_idle, args.minibatch
    sb3_mb = (
        SB3_PPO_ENVS * SB3_PPO_STEPS if mb == "auto" else min(int(mb), SB3_PPO_ENVS * SB3_PPO_STEPS)
    )
    wanted = {a.strip().lower() for a in args.algorithms.split(",") if a.strip()}
    jobs = []
    if "ppo" in wanted:
        jobs += [
            lambda: bench_sb3_ppo(make, 64, SB3_DEFAULT_MB, budget, seed, wait),
            lambda: bench_sb3_ppo(make, sb3_mb, SB3_OUR_MB, budget, seed, wait),
            *(
                (lambda n=n: bench_ours("ppo", "", ppo_overrides(n, mb), data, budget, seed, wait))
                for n in args.num_envs
            ),
        ]
    if "dqn" in wanted:
        jobs += [
            lambda: bench_sb3_dqn(make, budget, seed, wait),
            lambda: bench_ours(
                "dqn", DQN_CONFIGURED, dqn_overrides(64, False), data, budget, seed, wait
            ),
            lambda: bench_ours(
                "dqn", DQN_SB3_LIKE, dqn_overrides(64, True), data, budget, seed, wait
            ),
        ]
    rows: list[dict] = []
    for job in jobs:
        attempts: list[dict] = []
        while len(attempts) <= args.retries:
            torch.set_num_threads(max(1, args.threads))  # ours may have changed it
            r = job()
            attempts.append(r)
            if r["error"]:
                log(f"{label(r)}: FAILED {r['error']}")
                break
            busy = r["others_cpu"]
            extra = f" (others used {busy:.0%} of the CPU)" if busy is not None else ""
            log(
                f"{label(r)}: {r['frames']:,} frames in {r['seconds']:.1f} s = "
                f"{fmt_rate(r['frames_per_s'])} frames/s{extra}"
            )
            if not contended(r):
                break
            if len(attempts) <= args.retries:
                log("other processes were busy during that run: measuring again")
        # the least disturbed attempt
        r = min(attempts, key=lambda a: (a["error"] is not None, a["others_cpu"] or 0.0))
        r["attempts"] = len(attempts)
        rows.append(r)

    add_ratios(rows, args.minibatch)
    targets = check_targets(rows)
    total = time.perf_counter() - T0
    meta["total_s"] = total
    meta["load_average_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    notes = [
        "frames/s: env steps summed over the envs per second of a whole training call "
        "(ours: trainer.fit; SB3: model.learn) after a warm-up; ours include Lightning's loop "
        "and per-iteration logging, SB3 its callbacks and logger.",
        f"variant: SB3 PPO at batch_size 64 ({SB3_DEFAULT_MB}) and at our minibatch "
        f"{args.minibatch}, capped at its whole rollout ({SB3_OUR_MB}); our DQN {DQN_CONFIGURED} (prioritized replay, "
        f"3-step returns, double DQN) and {DQN_SB3_LIKE} (uniform replay, 1-step returns, no "
        "double DQN: SB3's algorithm; for reference, not for the target).",
        "mb: frames per gradient step (SB3 PPO's is capped at its "
        f"{SB3_PPO_ENVS * SB3_PPO_STEPS}-frame rollout); upd/kf: gradient steps per 1000 "
        "frames; reuse: PPO passes over each frame, DQN replayed transitions per collected frame.",
        "c/l/o %: shares of the timed wall time in collection (ours: module.collect, the TorchRL "
        "collector; SB3: collect_rollouts), in learning (ours: module.learn; SB3: train) and in "
        "the rest (Lightning's loop, training_step's bookkeeping and logging; SB3's learn loop).",
        f"vs SB3: over SB3 PPO {SB3_DEFAULT_MB} / SB3 DQN; vs same mb: our PPO over SB3 PPO "
        f"{SB3_OUR_MB}. The targets take our best PPO row and the {DQN_CONFIGURED} DQN row.",
        "quiet f/s: each timed run is cut at iteration boundaries into chunks of >= 1 s; this is "
        f"the rate over the chunks in which other processes took under {BUSY:.0%} of the CPU "
        "('-' when those cover under a quarter of the run); quiet vs: those rates over the SB3 "
        "row's. On a quiet machine they equal the whole-run numbers; on a shared one they are "
        "the better estimate.",
        f"data: synthetic {meta['data']['ticker']} 15-min bars ({data.market.num_bars} bars, "
        f"training split {list(train)}); stocks-v0 runs on the same closes with a "
        f"{ANYTRADING_WINDOW}-bar window. Ours use the Trainer's defaults otherwise (not the "
        "app's deterministic=true).",
    ]
    git = meta["git"]
    if git:
        changed = (
            f", {len(git['changed'])} file(s) under src/ and conf/ changed"
            if git["changed"]
            else ""
        )
        notes.append(f"code: the working tree at commit {git['commit'][:10]}{changed}.")
    flagged = [r for r in rows if (r["others_cpu"] or 0.0) > BUSY]
    if flagged:
        worst = max(r["others_cpu"] for r in flagged)
        notes.append(
            f"* other processes used over {BUSY:.0%} of the CPU during {len(flagged)} timed "
            f"run(s) (up to {worst:.0%}): their frames/s are low and noisy; see quiet f/s, "
            "or rerun on a quiet machine."
        )
    again = [f"{label(r)} ({r['attempts']} runs)" for r in rows if r["attempts"] > 1]
    if again:
        notes.append(
            f"measured again after a disturbed run (the least disturbed one is shown): "
            f"{'; '.join(again)}."
        )
    for r in rows:
        if r["error"]:
            notes.append(f"FAILED {label(r)}: {r['error']}")
    notes.append(f"total run time {total:.0f} s.")
    print_table(rows, meta, notes, targets)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps({"meta": meta, "notes": notes, "targets": targets, "rows": rows}, indent=2)
        )
        log(f"wrote {args.json}")
    return 0


def _git_state() -> dict | None:
    """The commit, and the files under src/ and conf/ that differ from it (the numbers are
    those of the working tree)."""
    import subprocess

    root = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--", "src", "conf"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    return {"commit": commit, "changed": [line[3:] for line in status.splitlines()]}


def _version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


if __name__ == "__main__":
    sys.exit(main())
