"""The RL half of the model-family protocol: collection, evaluation, logging, exact resume.

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

With ``world_size`` > 1 (Lightning DDP without its wrapper, see :mod:`modules.agents.ddp`) every
process runs its own envs (seeded ``seed + rank``) and collector and learns from its own batch;
the subclasses average gradients over processes before each optimizer step, so the weights stay
identical. ``frames``, the frame-based lengths and schedules and the episode count are summed
over processes (so every process stops at the same iteration); a checkpoint holds every
process's training state, a list indexed by rank, and resumes only with the same number of
processes.

A new agent subclasses :class:`AgentModule`, builds its networks and loss in ``__init__`` (its
config sections are keyword arguments, as its ``conf/model/NAME.yaml`` lists them) and
implements :meth:`collection_policy`, :meth:`greedy_policy`, :meth:`learn` and
:meth:`inference`; everything else the run needs is inherited.
"""

from __future__ import annotations

import copy
import functools
import logging
import math
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pytorch_lightning as pl
import torch
from tensordict import TensorDict, TensorDictBase
from tensordict.nn import TensorDictModuleBase
from torchrl.collectors import Collector

from datamodules.config import dataclass_from
from datamodules.errors import UserInputError
from envs.backtest import BacktestResult, backtest, buy_and_hold_targets
from envs.evaluation import evaluate_policy
from envs.factory import EnvFactory
from envs.metrics import loggable, metrics_to_floats
from envs.score import composite_score
from envs.stitch import concat_results
from modules.agents.config import CheckpointConfig, CollectorConfig, EvalConfig
from modules.agents.ddp import agent_strategy, check_agent_hardware
from modules.agents.num_envs import agent_threads, resolve_num_envs
from modules.agents.progress import AgentProgressBar, LearningCurves
from modules.agents.rollouts import EpisodeTracker, Rollouts
from modules.agents.step_metrics import publish_step
from modules.carry import Layout
from modules.collectives import all_gather, gather_to_rank_zero, sum_over_ranks, weights_digest
from modules.family import (
    WORLD_SIZE_KEY,
    Checkpointing,
    RunInputs,
    StrategyPlan,
    TrainingDiverged,
    saved_world_size,
    world_size_mismatch,
)
from modules.hardware import Hardware
from modules.signature import Inference

log = logging.getLogger(__name__)
# Lightning progress-bar names of some train/* numbers (short name -> key), as prog_bar=True logs.
_PROGRESS_BAR = {"fps": "train/fps", "ep_ret": "train/episode_return"}

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


@dataclass(frozen=True)
class Evaluation:
    """What the agent is scored on: the env factory (its market, costs and capital), the bar
    spans of the validation and test splits, and the seed of the random baseline."""

    make_env: EnvFactory
    val: tuple[int, int]
    test: tuple[int, int]
    seed: int = 0
    # The contiguous spans of each part when it has several (CPCV's test groups); None: the
    # part is the one span above.
    val_spans: tuple[tuple[int, int], ...] | None = None
    test_spans: tuple[tuple[int, int], ...] | None = None

    @property
    def market(self):
        return self.make_env.market

    def spans(self, part: str) -> tuple[tuple[int, int], ...]:
        """The spans ``part`` (val or test) is evaluated on, each as one episode from flat."""
        given = self.val_spans if part == "val" else self.test_spans
        return tuple(given) if given else ((self.val if part == "val" else self.test),)


def _floats(result: BacktestResult) -> dict[str, float]:
    return metrics_to_floats({k: v[0] for k, v in result.metrics.items()})


class AgentModule(pl.LightningModule):
    """Base of the RL agents (the agent half of :class:`modules.family.ModelFamily`).

    ``env``: the batched training env (not a submodule: its state lives in plain tensors on
    its own device); ``evaluation``: what validation and test score on; ``collector``,
    ``eval`` and ``checkpoint``: the config sections of the same names (mappings or their
    dataclasses); ``world_size``: processes training together; ``init_random_frames``: frames
    (summed over processes) of uniformly random actions before learning."""

    resumable: ClassVar[bool] = True
    lengths: ClassVar[Mapping[str, str]] = {
        "frames": "collector.total_frames",
        "iterations": "collector.iterations",
        "episodes": "collector.episodes",
    }
    collector_config: ClassVar[type[CollectorConfig]] = CollectorConfig

    def __init__(
        self,
        env,
        evaluation: Evaluation,
        *,
        collector: CollectorConfig | Mapping,
        eval: EvalConfig | Mapping | None = None,  # noqa: A002 - the config section's name
        checkpoint: CheckpointConfig | Mapping | None = None,
        name: str = "agent",
        world_size: int = 1,
        init_random_frames: int = 0,
    ) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.__dict__["env"] = env
        self.evaluation = evaluation
        self.name = str(name)
        self.collector_cfg = dataclass_from(self.collector_config, collector, "model.collector")
        self.eval_cfg = dataclass_from(EvalConfig, eval, "model.eval")
        self.checkpoint_cfg = dataclass_from(CheckpointConfig, checkpoint, "model.checkpoint")
        self.num_envs = int(env.batch_size.numel())
        self.frames_per_env = int(self.collector_cfg.frames_per_env)
        # Processes training together (each with its own envs); frame counts are summed over them.
        self.world_size = int(world_size)
        if self.world_size < 1:
            raise UserInputError(f"world_size is {world_size}; use >= 1 processes.")
        self.frames_per_batch = self.num_envs * self.frames_per_env  # per process
        self.max_iterations = self.collector_cfg.max_iterations(
            self.frames_per_batch * self.world_size
        )
        self.init_random_frames = int(init_random_frames)  # summed over processes
        self.episodes = 0  # completed training episodes, summed over processes
        self._rank_seeded = False
        self.collector: Collector | None = None
        self.tracker = EpisodeTracker(self.num_envs, env.device)
        self.frames = 0
        self.iteration = 0
        self.reports: dict[str, dict[str, BacktestResult]] = {}
        self._baselines: dict[tuple[int, int, int], dict[str, BacktestResult]] = {}
        self.risk_totals: dict[str, int] = {}
        self._pending: dict | None = None
        self._clock: float | None = None
        self._collect_seconds = 0.0
        # Torch intra-op threads while fitting (None: leave them); the run sets it from the
        # hardware and the number of envs (modules.agents.num_envs.agent_threads).
        self.threads: int | None = None

    # ------------------------------------------------------------------ the family protocol
    @classmethod
    def length_overrides(cls, unit: str, length: int) -> list[str]:
        """Set ``unit``'s key and null the other lengths (the first non-null one wins)."""
        return [f"model.{cls.lengths[unit]}={length}"] + [
            f"model.{key}=null" for other, key in cls.lengths.items() if other != unit
        ]

    @classmethod
    def check(cls, factory: functools.partial, hardware: Hardware, env: Any) -> None:
        """Agents train on cpu or gpu, data-parallel with DDP only, and with a fixed number of
        envs per process when there are several (see :mod:`modules.agents.ddp`)."""
        check_agent_hardware(hardware, getattr(env, "keywords", {}).get("num_envs", 1))

    @classmethod
    def build(cls, factory: functools.partial, run: RunInputs) -> AgentModule:
        """An env over the training spans (``env.num_envs`` of them, or as many as fit with
        ``auto``), the validation/test evaluation, and the agent ``factory`` makes on them."""
        collector = dataclass_from(
            cls.collector_config, factory.keywords.get("collector"), "model.collector"
        )
        device = run.hardware.device
        # The training bars: one span, or CPCV's training groups (episodes never cross from one
        # into the next, so none runs through a purged, embargoed or held-out span).
        spans = run.data.split.spans("train")
        train = spans[0] if len(spans) == 1 else spans
        num_envs = resolve_num_envs(run.env, train, collector.frames_per_env, device)
        env = run.env(train, num_envs=num_envs, device=device, seed=run.seed)
        split = run.data.split
        evaluation = Evaluation(
            run.env,
            split.val,
            split.test,
            run.seed,
            val_spans=split.spans("val"),
            test_spans=split.spans("test"),
        )
        module = factory(env=env, evaluation=evaluation, world_size=run.hardware.world_size)
        module.threads = agent_threads(run.hardware, num_envs)
        return module

    def datamodule(self) -> None:
        return None  # the collector is the data source (Rollouts)

    def checkpointing(self) -> Checkpointing:
        return Checkpointing(
            monitor="val/score",
            mode="max",
            filename="best-iter{epoch:04d}",
            every_n_epochs=self.eval_cfg.every_n_iterations,
            last_every=self.checkpoint_cfg.every_n_iterations,
        )

    def trainer_settings(self) -> dict[str, Any]:
        return {
            "max_epochs": self.max_iterations if self.max_iterations is not None else -1,
            "check_val_every_n_epoch": self.eval_cfg.every_n_iterations,
            "num_sanity_val_steps": 0,
            "log_every_n_steps": 1,
            "use_distributed_sampler": False,
            "enable_model_summary": False,  # describe() gives the parameter count
        }

    def callbacks(self) -> list[pl.Callback]:
        return [LearningCurves()]

    def progress_bar(self) -> pl.Callback:
        return AgentProgressBar()

    def strategy(self, hardware: Hardware) -> StrategyPlan:
        return agent_strategy(hardware, self.threads)

    def describe(self) -> str:
        return (
            f"{self.name}: {self.num_envs} envs x {self.frames_per_env} frames per iteration; "
            f"length {self.collector_cfg.describe}; "
            f"{sum(p.numel() for p in self.parameters()):,} parameters"
        )

    def progress(self) -> str:
        return f"iteration {self.iteration} ({self.frames:,} frames)"

    def layout(self) -> Layout:
        """Observation column names and action meanings of the env (for curriculum carry)."""
        return Layout(
            self.env.observation_names(), self.env.action_meanings(), self.env.actions.neutral
        )

    def policy_metadata(self, recurrent_state: tuple[int, ...] | None = None) -> dict:
        """The ``metadata.json`` entries every exported agent has: the observation and action
        layout of its env (for :class:`experiments.inference.Policy`)."""
        env = self.env
        return {
            "model": self.name,
            "window": int(env.episode.window),
            "obs_dim": int(env.obs_dim),
            "observation_names": env.observation_names(),
            "num_actions": int(env.actions.num_actions),
            "action_map": {str(k): v for k, v in env.actions.table().items()},
            "action_meanings": env.action_meanings(),
            "recurrent": recurrent_state is not None,
            "state_shape": list(recurrent_state) if recurrent_state is not None else None,
        }

    @staticmethod
    def cpu_copy(net: torch.nn.Module) -> torch.nn.Module:
        """A CPU copy of a trained network, in eval mode, for an inference wrapper."""
        return copy.deepcopy(net).cpu().eval()

    def verification_inputs(self, inference: Inference, max_samples: int) -> tuple[np.ndarray, ...]:
        """Observations ``(N, D)`` (and states ``(N, S, H)`` before each step, for recurrent
        policies) of a greedy rollout of the exported wrapper over the test split."""
        wrapper, sig = inference.wrapper, inference.signature
        recurrent = "state" in sig.inputs
        seen_obs: list[torch.Tensor] = []
        seen_state: list[torch.Tensor] = []
        memory: dict[str, torch.Tensor] = {}

        def act(obs: torch.Tensor) -> torch.Tensor:
            obs = obs.float()
            if len(seen_obs) < max_samples:
                seen_obs.append(obs.clone())
            if not recurrent:
                return wrapper(obs)[0]
            state = memory.get("state")
            if state is None:
                state = torch.zeros(obs.shape[0], *sig.inputs["state"])
            if len(seen_state) < max_samples:
                seen_state.append(state.clone())
            action, _, memory["state"] = wrapper(obs, state)
            return action

        with torch.no_grad():
            evaluate_policy(act, self.evaluation.make_env, self.evaluation.test)
        obs = torch.cat(seen_obs).numpy().astype(np.float32)
        if not recurrent:
            return (obs,)
        return obs, torch.cat(seen_state).numpy().astype(np.float32)

    def inference(self) -> Inference:
        """The exported inference path; each agent implements it (see PPO and DQN)."""
        raise NotImplementedError

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
        if self.threads is not None and torch.get_num_threads() != self.threads:
            torch.set_num_threads(self.threads)
            log.info("agent on CPU with %d envs: %d torch thread(s)", self.num_envs, self.threads)
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
        rules = self.env.rule_names
        fired = info["triggers"].reshape(-1, len(rules)).sum(0)
        logged.update({f"train/risk_{rule}": fired[i].float() for i, rule in enumerate(rules)})
        if returns.numel():
            logged["train/episode_return"] = returns.mean()
        if self.max_iterations is None and self.episodes >= int(self.collector_cfg.episodes):
            self.trainer.should_stop = True  # the length is in episodes (RunLength)
        self.last_logged = logged  # this iteration's numbers, for learning_curves.csv
        publish_step(self, logged, bar=_PROGRESS_BAR)

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
    def _evaluate(self, part: str, policy: Greedy) -> tuple[list[BacktestResult], dict]:
        """A deterministic pass of ``policy`` over each span of ``part``; the risk-rule counts
        summed over them."""
        results, counts = [], {}
        for span in self.evaluation.spans(part):
            result, fired = evaluate_policy(
                policy, self.evaluation.make_env, span, device=self.env.device
            )
            results.append(result)
            counts = {k: counts.get(k, 0) + v for k, v in fired.items()}
        return results, counts

    def _passive(self, span: tuple[int, int], steps: int) -> dict[str, BacktestResult]:
        """Buy-and-hold and flat over the bars an evaluation of ``span`` trades (``steps``
        decisions from its first decision bar), priced like the agent; once per span."""
        key = (int(span[0]), int(span[1]), int(steps))
        if key not in self._baselines:
            ev = self.evaluation
            first = max(int(span[0]), int(self.env.episode.window) - 1)
            assets = ev.market.num_assets
            frictions, capital = self.env.frictions, self.env.capital
            hold = buy_and_hold_targets(steps, assets)
            flat = torch.zeros(steps, assets, dtype=torch.float64)
            self._baselines[key] = {
                "buy_and_hold": backtest(ev.market, hold, first, frictions, capital),
                "flat": backtest(ev.market, flat, first, frictions, capital),
            }
        return self._baselines[key]

    def _report(self, part: str, **policies: Greedy) -> tuple[dict[str, BacktestResult], dict]:
        """Each policy (the first is the agent's, reported as ``strategy``) and the passive
        baselines over every span of ``part``, joined span by span; the agent's risk counts."""
        ppy = self.evaluation.market.periods_per_year
        out: dict[str, list[BacktestResult]] = {}
        counts: dict = {}
        for i, (name, policy) in enumerate(policies.items()):
            out[name], fired = self._evaluate(part, policy)
            counts = fired if i == 0 else counts
        first = next(iter(policies))
        spans = self.evaluation.spans(part)
        for span, result in zip(spans, out[first], strict=True):
            for name, res in self._passive(span, result.returns.shape[1]).items():
                out.setdefault(name, []).append(res)
        joined = {name: concat_results(parts, ppy) for name, parts in out.items()}
        order = [first, "buy_and_hold", "flat", *(n for n in policies if n != first)]
        return {("strategy" if n == first else n): joined[n] for n in order}, counts

    def validation_step(self, batch, batch_idx: int) -> None:
        self.reports["val"], _ = self._report("val", agent=self.greedy_policy())
        ours = _floats(self.reports["val"]["strategy"])
        logged = {f"val/{k}": ours[k] for k in LOGGED if k in ours}
        logged["val/score"] = composite_score(ours)
        clean = loggable(logged, self.device)
        sharpe = clean.pop("val/sharpe")
        self.log_dict(clean, batch_size=1, **self._same_everywhere())
        self.log("val/sharpe", sharpe, prog_bar=True, batch_size=1, **self._same_everywhere())

    def test_step(self, batch, batch_idx: int) -> None:
        rng = torch.Generator(device=self.env.device).manual_seed(int(self.evaluation.seed))
        actions = int(self.env.action_spec.n)

        def random_policy(obs: torch.Tensor) -> torch.Tensor:
            return torch.randint(0, actions, obs.shape[:1], generator=rng, device=self.env.device)

        self.reports["test"], counts = self._report(
            "test", agent=self.greedy_policy(), random=random_policy
        )
        self.risk_totals = counts
        logged = {}
        for name, res in self.reports["test"].items():
            values = _floats(res)
            prefix = "test/" if name == "strategy" else f"test/{name}_"
            logged.update({f"{prefix}{k}": values[k] for k in LOGGED if k in values})
            logged[f"{prefix}score"] = composite_score(values)
        logged.update({f"test/risk_{k}": float(v) for k, v in counts.items()})
        clean = loggable(logged, self.device)
        self.log_dict(clean, batch_size=1, **self._same_everywhere())

    def _same_everywhere(self) -> dict:
        """``self.log`` options for evaluation numbers, which every process computes alike
        (identical weights, a deterministic pass): synced with max, which keeps them exact
        (and tells Lightning they are synced)."""
        return {"sync_dist": True, "reduce_fx": "max"} if self.world_size > 1 else {}

    # ------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint[WORLD_SIZE_KEY] = self.world_size
        if self.world_size == 1:
            checkpoint["agent_state"] = self._state()
        else:  # every process's state, a list indexed by rank (rank 0 writes the file)
            checkpoint["agent_state"] = gather_to_rank_zero(self._state())

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint.get("agent_state")
        trainer = self._trainer
        if state is None or (trainer is not None and not trainer.training):
            return  # validate/test load weights only; the training state matters to fit
        saved = saved_world_size(checkpoint)
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
