"""What PPO and DQN share as LightningModules: collection, evaluation, logging, exact resume.

An agent trains inside Lightning's ``Trainer`` with manual optimization. Each epoch is one
iteration: the TorchRL ``Collector`` steps the batched training env (on the module's device)
for ``frames_per_env`` steps, :meth:`AgentModule.learn` updates the networks, and the
iteration's numbers are logged. Validation is a deterministic pass over the validation split
(greedy actions, one path from its first bar); the test adds buy-and-hold, flat and a seeded
random policy, all priced by the same simulator.

Checkpoints hold, beside Lightning's weights and optimizer states: the env's state tensors and
RNG, the collector's carried observation and frame count, episode bookkeeping, the global RNG
states of torch, numpy and Python, and whatever a subclass adds (DQN: its replay buffer). All of
it is plain tensors and numbers, so checkpoints load with ``torch.load(weights_only=True)``.

With ``world_size`` > 1 (Lightning DDP, see :mod:`modules.distributed`) every process runs its
own envs (seeded ``seed + rank``) and collector and learns from its own batch; the subclasses
average gradients over processes before each optimizer step, so the weights stay identical.
``frames``, the frame-based lengths and schedules and the episode count are summed over
processes (so every process stops at the same iteration); a checkpoint holds every process's
training state, a list indexed by rank, and resumes only with the same number of processes.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import pytorch_lightning as pl
import torch
from tensordict import TensorDict, TensorDictBase
from tensordict.nn import TensorDictModuleBase
from torchrl.collectors import Collector

from datamodules.errors import UserInputError
from datamodules.market import Market
from envs.backtest import BacktestResult, backtest, buy_and_hold_targets
from envs.evaluation import evaluate_policy
from envs.frictions import Frictions
from envs.metrics import metrics_to_floats
from envs.risk import RULES
from envs.score import composite_score
from modules.carry import Layout
from modules.distributed import (
    all_gather,
    gather_to_rank_zero,
    sum_over_ranks,
    weights_digest,
)
from modules.rollouts import EpisodeTracker, Rollouts, RunLength

log = logging.getLogger(__name__)

# Metrics logged for validation and test (the simulator's names), plus `score`.
LOGGED = (
    "sharpe",
    "sortino",
    "total_return",
    "annual_return",
    "max_drawdown",
    "calmar",
    "annual_turnover",
    "exposure",
    "num_trades",
)
Greedy = Callable[[torch.Tensor], torch.Tensor]


class TrainingDiverged(UserInputError):
    """A loss or a parameter became NaN or infinite; the run stops before saving it."""


@dataclass(frozen=True)
class Evaluation:
    """What the agent is scored on: the market, the bar spans of the validation and test
    splits, the env config (``cfg.env`` as plain values), and the seed of the random baseline."""

    market: Market
    val: tuple[int, int]
    test: tuple[int, int]
    env: Mapping
    seed: int = 0

    @property
    def frictions(self) -> Frictions:
        return Frictions(**dict(self.env.get("costs") or {}))

    @property
    def capital(self) -> float:
        return float(self.env.get("capital", 100_000.0))


def _floats(result: BacktestResult) -> dict[str, float]:
    return metrics_to_floats({k: v[0] for k, v in result.metrics.items()})


class AgentModule(pl.LightningModule):
    """Base of the RL agents. Subclasses build their networks and losses and implement
    :meth:`collection_policy`, :meth:`greedy_policy` and :meth:`learn`."""

    def __init__(
        self,
        env,
        evaluation: Evaluation,
        length: RunLength,
        frames_per_env: int,
        init_random_frames: int = 0,
        world_size: int = 1,
    ) -> None:
        super().__init__()
        self.automatic_optimization = False
        # The env is not a submodule: its state lives in plain tensors on its own device.
        self.__dict__["env"] = env
        self.evaluation = evaluation
        self.length = length
        self.num_envs = int(env.batch_size.numel())
        self.frames_per_env = int(frames_per_env)
        if self.frames_per_env < 1:
            raise UserInputError(
                f"model.collector.frames_per_env is {frames_per_env}; use >= 1 steps per env."
            )
        # Processes training together (each with its own envs); frame counts are summed over them.
        self.world_size = int(world_size)
        if self.world_size < 1:
            raise UserInputError(f"world_size is {world_size}; use >= 1 processes.")
        self.frames_per_batch = self.num_envs * self.frames_per_env  # per process
        self.max_iterations = length.max_iterations(self.frames_per_batch * self.world_size)
        self.init_random_frames = int(init_random_frames)  # summed over processes
        self.episodes = 0  # completed training episodes, summed over processes
        self._rank_seeded = False
        self.collector: Collector | None = None
        self.tracker = EpisodeTracker(self.num_envs, env.device)
        self.frames = 0
        self.iteration = 0
        self.reports: dict[str, dict[str, BacktestResult]] = {}
        self.risk_totals: dict[str, int] = {}
        self._pending: dict | None = None
        self._clock: float | None = None
        self._collect_seconds = 0.0

    def layout(self) -> Layout:
        """Observation column names and action meanings of the env (for curriculum carry)."""
        return Layout(
            self.env.observation_names(), self.env.action_meanings(), self.env.actions.neutral
        )

    # ------------------------------------------------------------------ subclass API
    def collection_policy(self) -> TensorDictModuleBase:
        """The exploring policy the collector runs (writes ``action``)."""
        raise NotImplementedError

    def greedy_policy(self) -> Greedy:
        """A fresh deterministic policy: observations (P, D) -> action indices (P,)."""
        raise NotImplementedError

    def learn(self, batch: TensorDictBase) -> dict[str, torch.Tensor]:
        """Update the networks from one collected batch ``[num_envs, frames_per_env]``;
        return the numbers to log (0-d tensors), including every loss."""
        raise NotImplementedError

    def step_schedulers(self) -> None:
        """Advance every LR scheduler by one iteration."""
        schedulers = self.lr_schedulers()
        if schedulers is None:
            return
        for scheduler in schedulers if isinstance(schedulers, list) else [schedulers]:
            scheduler.step()

    def postproc(self):
        """A transform of each collected batch (e.g. n-step returns), or None."""
        return None

    def extra_state(self) -> dict:
        """More state to checkpoint (plain tensors and numbers)."""
        return {}

    def load_extra_state(self, state: dict) -> None:
        """Restore what :meth:`extra_state` returned."""

    # ------------------------------------------------------------------ data
    def train_dataloader(self) -> Rollouts:
        return Rollouts(self.collect)

    def val_dataloader(self) -> list[int]:
        return [0]

    def test_dataloader(self) -> list[int]:
        return [0]

    def _make_collector(self) -> Collector:
        # Random frames before learning count over all processes: each collects its share.
        random_frames = math.ceil(self.init_random_frames / self.world_size)
        return Collector(
            self.env,
            self.collection_policy(),
            frames_per_batch=self.frames_per_batch,
            total_frames=-1,
            init_random_frames=random_frames or None,
            postproc=self.postproc(),
            trust_policy=True,
            auto_register_policy_transforms=False,  # recurrent PPO adds its own transforms
        )

    def collect(self) -> TensorDictBase:
        """One batch from the collector (built on first use, then restored if resuming)."""
        if self.collector is None:
            self.collector = self._make_collector()
            if self._pending is not None:
                self._restore(self._pending)
                self._pending = None
        start = time.perf_counter()
        batch = self.collector.next()
        self._collect_seconds = time.perf_counter() - start
        return batch

    # ------------------------------------------------------------------ distributed
    def setup(self, stage: str) -> None:
        trainer = self._trainer
        if trainer is None or stage != "fit":
            return
        if trainer.world_size != self.world_size:
            raise UserInputError(
                f"The agent was built for {self.world_size} process(es) but the Trainer runs "
                f"{trainer.world_size}; build it with world_size={trainer.world_size}."
            )
        if self.world_size > 1 and not self._rank_seeded:
            self._seed_rank(trainer.global_rank)

    def _seed_rank(self, rank: int) -> None:
        """Give this process its own env and action randomness: env seed + rank, global RNGs
        seed + rank (a resumed run then restores each process's saved states instead)."""
        base = self.env.base_env if hasattr(self.env, "base_env") else self.env
        base.rng.manual_seed(int(base.rng.initial_seed()) + rank)
        seed = int(self.evaluation.seed) + rank
        torch.manual_seed(seed)
        np.random.seed(seed % 2**32)
        random.seed(seed)
        self._rank_seeded = True

    def on_fit_end(self) -> None:
        if self.world_size == 1:
            return
        # Every tensor of the state dict: weights, and DQN's target network.
        digests = all_gather(weights_digest(self.state_dict()))
        if len(set(digests)) == 1:
            log.info(
                "weights identical on all %d processes (digest %s)", self.world_size, digests[0]
            )
        else:
            log.error("weights differ between processes: digests by rank %s", digests)

    # ------------------------------------------------------------------ training
    def on_train_start(self) -> None:
        self._clock = time.perf_counter()

    def training_step(self, batch: TensorDictBase, batch_idx: int) -> None:
        self.iteration += 1
        frames = int(batch.numel())
        self.frames += frames * self.world_size
        try:
            stats = self.learn(batch)
        except (RuntimeError, ValueError):
            # A NaN update mid-iteration breaks the next sampling step inside torch; report the
            # divergence rather than that error.
            self._check_finite({})
            raise
        returns = self.tracker.update(batch["next", "reward"], batch["next", "done"])
        # One collective per iteration: episodes and divergence, so every process stops (or
        # raises) at the same iteration.
        bad = self._nonfinite(stats)
        episodes, bad_ranks = sum_over_ranks(
            [self.tracker.completed, float(bool(bad[0] or bad[1]))], self.device
        )
        self.episodes = int(episodes)
        self._check_finite(stats, elsewhere=bad_ranks > 0)
        now = time.perf_counter()
        elapsed = now - (self._clock or now)
        self._clock = now
        logged = {f"train/{k}": v.detach().float() for k, v in stats.items()}
        info = batch["next", "info"]
        # Frames, episodes and frames/s are summed over processes (they run in lockstep);
        # rewards, losses and returns are this process's (rank 0 logs).
        everywhere = frames * self.world_size
        logged.update(
            {
                "train/frames": float(self.frames),
                "train/iteration": float(self.iteration),
                "train/episodes": float(self.episodes),
                "train/fps": everywhere / max(elapsed, 1e-9),
                "train/collect_fps": everywhere / max(self._collect_seconds, 1e-9),
                "train/reward": batch["next", "reward"].mean(),
                "train/reward_pnl_bps": info["pnl"].mean(),
                "train/reward_cost_bps": info["cost"].mean(),
                "train/reward_penalty": info["penalty"].mean(),
                "train/turnover": info["turnover"].mean(),
            }
        )
        fired = info["triggers"].reshape(-1, len(RULES)).sum(0)
        logged.update({f"train/risk_{rule}": fired[i].float() for i, rule in enumerate(RULES)})
        if returns.numel():
            logged["train/episode_return"] = returns.mean()
        self.log_dict(logged, on_step=True, on_epoch=False, batch_size=1)
        bar = {"fps": logged["train/fps"]}
        if returns.numel():
            bar["ep_ret"] = logged["train/episode_return"]
        self.log_dict(bar, prog_bar=True, logger=False, on_step=True, batch_size=1)
        if self.max_iterations is None and self.episodes >= int(self.length.episodes):
            self.trainer.should_stop = True  # the length is in episodes (RunLength)

    def _nonfinite(self, stats: Mapping[str, torch.Tensor]) -> tuple[list[str], list[str]]:
        params = [n for n, p in self.named_parameters() if not bool(torch.isfinite(p).all())]
        values = [k for k, v in stats.items() if not bool(torch.isfinite(v).all())]
        return params, values

    def _check_finite(self, stats: Mapping[str, torch.Tensor], elsewhere: bool = False) -> None:
        """Raise :class:`TrainingDiverged` if a parameter or a logged value is not finite here,
        or (``elsewhere``) in another process."""
        params, values = self._nonfinite(stats)
        if not params and not values and not elsewhere:
            return
        parts = []
        if values:
            parts.append("logged values " + ", ".join(values[:6]))
        if params:
            more = f" (and {len(params) - 4} more)" if len(params) > 4 else ""
            parts.append("parameters " + ", ".join(params[:4]) + more)
        if not parts:
            parts.append("values in another training process")
        raise TrainingDiverged(
            f"Training diverged at iteration {self.iteration} (frame {self.frames:,}): "
            f"{'; '.join(parts)} became NaN or infinite. The run stopped without saving this "
            "state; the last good checkpoint is in the run's checkpoints/ folder (last.ckpt). "
            "Lower the learning rates (model.optim.*), set model.optim.max_grad_norm, or check "
            "the reward scale (env.reward.scale, env.reward.normalize=true)."
        )

    # ------------------------------------------------------------------ evaluation
    def _evaluate(self, span: tuple[int, int], policy: Greedy) -> tuple[BacktestResult, dict]:
        ev = self.evaluation
        return evaluate_policy(policy, ev.market, span, ev.env, device=self.env.device)

    def validation_step(self, batch, batch_idx: int) -> None:
        result, counts = self._evaluate(self.evaluation.val, self.greedy_policy())
        ours = _floats(result)
        logged = {f"val/{k}": ours[k] for k in LOGGED if k in ours}
        logged["val/score"] = composite_score(ours)
        clean = {k: (v if math.isfinite(v) else 0.0) for k, v in logged.items()}
        sharpe = clean.pop("val/sharpe")
        self.log_dict(clean, batch_size=1, **self._same_everywhere())
        self.log("val/sharpe", sharpe, prog_bar=True, batch_size=1, **self._same_everywhere())

    def test_step(self, batch, batch_idx: int) -> None:
        ev = self.evaluation
        result, counts = self._evaluate(ev.test, self.greedy_policy())
        rng = torch.Generator(device=self.env.device).manual_seed(int(ev.seed))
        actions = int(self.env.action_spec.n)

        def random_policy(obs: torch.Tensor) -> torch.Tensor:
            return torch.randint(0, actions, obs.shape[:1], generator=rng, device=self.env.device)

        randomly, _ = self._evaluate(ev.test, random_policy)
        steps = result.returns.shape[1]
        first = max(int(ev.test[0]), int(ev.env.get("episode", {}).get("window", 1)) - 1)
        assets = ev.market.num_assets
        hold = backtest(
            ev.market, buy_and_hold_targets(steps, assets), first, ev.frictions, ev.capital
        )
        flat = backtest(
            ev.market,
            torch.zeros(steps, assets, dtype=torch.float64),
            first,
            ev.frictions,
            ev.capital,
        )
        self.reports["test"] = {
            "strategy": result,
            "buy_and_hold": hold,
            "flat": flat,
            "random": randomly,
        }
        self.risk_totals = counts
        logged = {}
        for name, res in self.reports["test"].items():
            values = _floats(res)
            prefix = "test/" if name == "strategy" else f"test/{name}_"
            logged.update({f"{prefix}{k}": values[k] for k in LOGGED if k in values})
            logged[f"{prefix}score"] = composite_score(values)
        logged.update({f"test/risk_{k}": float(v) for k, v in counts.items()})
        clean = {k: (v if math.isfinite(v) else 0.0) for k, v in logged.items()}
        self.log_dict(clean, batch_size=1, **self._same_everywhere())

    def _same_everywhere(self) -> dict:
        """``self.log`` options for evaluation numbers, which every process computes alike
        (identical weights, a deterministic pass): synced with max, which keeps them exact
        (and tells Lightning they are synced)."""
        return {"sync_dist": True, "reduce_fx": "max"} if self.world_size > 1 else {}

    # ------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["agent_world_size"] = self.world_size
        if self.world_size == 1:
            checkpoint["agent_state"] = self._state()
        else:  # every process's state, a list indexed by rank (rank 0 writes the file)
            checkpoint["agent_state"] = gather_to_rank_zero(self._state())

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint.get("agent_state")
        trainer = self._trainer
        if state is None or (trainer is not None and not trainer.training):
            return  # validate/test load weights only; the training state matters to fit
        saved = checkpoint_world_size(checkpoint)
        if saved != self.world_size:
            raise UserInputError(world_size_mismatch(saved, self.world_size))
        if isinstance(state, list):
            state = state[trainer.global_rank if trainer is not None else 0]
        if self.collector is not None:
            self._restore(state)
        else:
            self._pending = state

    def _state(self) -> dict:
        base = self.env.base_env if hasattr(self.env, "base_env") else self.env
        state = {
            "frames": self.frames,
            "iteration": self.iteration,
            "episodes": self.tracker.state(),
            "env": base.state_tensors(),
            "rng": _rng_state(),
            "extra": self.extra_state(),
        }
        if self.collector is not None:
            carrier = self.collector._carrier.flatten_keys(".")
            state["collector"] = {
                "carrier": {k: v.clone() for k, v in carrier.items()},
                "frames": int(self.collector._frames),
                "iter": int(self.collector._iter),
            }
        return state

    def _restore(self, state: dict) -> None:
        self.frames = int(state["frames"])
        self.iteration = int(state["iteration"])
        self.tracker.load(state["episodes"])
        base = self.env.base_env if hasattr(self.env, "base_env") else self.env
        base.load_state_tensors(state["env"])
        saved = state.get("collector")
        if saved is not None and self.collector is not None:
            carrier = TensorDict(
                {k: v.to(self.env.device) for k, v in saved["carrier"].items()},
                batch_size=self.env.batch_size,
                device=self.env.device,
            ).unflatten_keys(".")
            self.collector._carrier = carrier
            self.collector._frames = saved["frames"]
            self.collector._iter = saved["iter"]
        self.load_extra_state(state["extra"])
        _load_rng_state(state["rng"])


def checkpoint_world_size(checkpoint: Mapping) -> int:
    """How many processes trained the agent that saved ``checkpoint`` (1 for older ones)."""
    if "agent_world_size" in checkpoint:
        return int(checkpoint["agent_world_size"])
    state = checkpoint.get("agent_state")
    return len(state) if isinstance(state, list) else 1


def world_size_mismatch(saved: int, now: int) -> str:
    """The one-paragraph refusal to resume a checkpoint of ``saved`` processes with ``now``."""
    return (
        f"This checkpoint was saved by an agent trained by {saved} process(es) and this run "
        f"would train it with {now}. An agent's checkpoint holds each process's own envs, "
        "collector, RNG states and replay buffer, so it resumes only with the same number of "
        "processes: resume with the hardware it was saved with (hardware.devices x "
        f"hardware.num_nodes = {saved}: hardware=cpu or gpu for 1, hardware=ddp_cpu for 2), or "
        "start a new run without resume=."
    )


def _rng_state() -> dict:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "python": {"version": version, "internal": list(internal), "gauss": gauss},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _load_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    npy = state["numpy"]
    np.random.set_state(
        (
            npy["kind"],
            npy["keys"].numpy().astype(np.uint32),
            npy["pos"],
            npy["has_gauss"],
            npy["cached"],
        )
    )
    py = state["python"]
    random.setstate((py["version"], tuple(py["internal"]), py["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
