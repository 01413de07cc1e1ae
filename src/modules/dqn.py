"""DQN on TorchRL's ``DQNLoss``, as a LightningModule (see :mod:`modules.agent`).

Double DQN (the online network picks the next action, the target network values it), an
optional dueling head, n-step returns (TorchRL's ``MultiStep`` on each collected batch),
prioritized replay (``PrioritizedSampler``) with importance weights, soft (Polyak) or hard
target updates, and epsilon-greedy exploration decaying linearly or exponentially with the
frames collected. The first ``learning_starts`` frames take uniformly random actions and no
update is made until they are in the buffer; afterwards each iteration makes
``updates_per_frame`` x (frames collected) updates of ``replay.batch_size`` transitions.

With several DDP processes each keeps its own replay buffer fed by its own envs, makes
``updates_per_frame`` x (its own frames) updates of ``replay.batch_size`` of its transitions, and
averages the gradients with the others before each step; the target networks therefore follow
identical weights. ``learning_starts`` and the epsilon schedule count frames over all processes.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
from tensordict import TensorDict, TensorDictBase
from tensordict.nn import TensorDictModule, TensorDictModuleBase, TensorDictSequential
from torchrl.data import (
    Categorical,
    LazyTensorStorage,
    PrioritizedSampler,
    RandomSampler,
    TensorDictReplayBuffer,
)
from torchrl.data.postprocs import MultiStep
from torchrl.modules import QValueModule
from torchrl.objectives import DQNLoss, HardUpdate, SoftUpdate, ValueEstimators

from datamodules.errors import ConfigError
from modules.agent import AgentModule, Evaluation, Greedy
from modules.distributed import average_gradients
from modules.policies import NetworkConfig, QNet
from modules.rollouts import RunLength
from modules.schedules import lr_lambda

TARGET_UPDATES = ("soft", "hard")
# What a stored transition keeps (n-step returns add steps_to_next_obs, gamma, nonterminal).
REPLAY_KEYS = (
    "observation",
    "action",
    ("next", "observation"),
    ("next", "reward"),
    ("next", "done"),
    ("next", "terminated"),
    ("next", "truncated"),
    "steps_to_next_obs",
    "gamma",
    "nonterminal",
)
EPSILON_SCHEDULES = ("linear", "exponential")


@dataclass(frozen=True)
class DQNLossConfig:
    """``model.loss``: ``gamma`` discount per bar; ``n_steps`` bars of rewards per target (1 =
    one-step TD); ``double_dqn``; ``loss_function``: smooth_l1 | l2; ``target_update``: soft
    (Polyak, ``tau`` per update) | hard (copy every ``hard_update_period`` updates)."""

    gamma: float = 0.99
    n_steps: int = 3
    double_dqn: bool = True
    loss_function: str = "smooth_l1"
    target_update: str = "soft"
    tau: float = 0.005
    hard_update_period: int = 1000


@dataclass(frozen=True)
class ReplayConfig:
    """``model.replay``: ``size`` transitions kept; ``prioritized`` sampling by |TD error|^alpha
    with importance weights of exponent ``beta``; ``batch_size`` transitions per update."""

    size: int = 100_000
    prioritized: bool = True
    alpha: float = 0.6
    beta: float = 0.4
    batch_size: int = 256


@dataclass(frozen=True)
class DQNOptimConfig:
    """``model.optim``: ``lr`` (AdamW); ``updates_per_frame``: gradient updates per collected
    frame (fractions allowed, carried over); ``max_grad_norm`` (null = off); ``lr_schedule``:
    constant | linear | cosine; ``weight_decay``."""

    lr: float = 5e-4
    updates_per_frame: float = 0.03125
    max_grad_norm: float | None = 10.0
    lr_schedule: str = "constant"
    weight_decay: float = 0.0


@dataclass(frozen=True)
class ExplorationConfig:
    """``model.exploration``: epsilon from ``eps_start`` to ``eps_end``; ``schedule`` linear
    (reaching ``eps_end`` after ``decay_frames`` frames) | exponential (the gap to ``eps_end``
    shrinks by e every ``decay_frames`` frames)."""

    schedule: str = "linear"
    eps_start: float = 1.0
    eps_end: float = 0.05
    decay_frames: int = 100_000

    def epsilon(self, frames: int) -> float:
        gap = self.eps_start - self.eps_end
        if self.schedule == "linear":
            return self.eps_start - gap * min(frames / max(self.decay_frames, 1), 1.0)
        return self.eps_end + gap * math.exp(-frames / max(self.decay_frames, 1))


class EpsilonGreedy(TensorDictModuleBase):
    """Replaces ``action`` by a uniformly random one with probability ``epsilon``."""

    in_keys = ["action"]
    out_keys = ["action"]

    def __init__(self, num_actions: int) -> None:
        super().__init__()
        self.num_actions = num_actions
        self.epsilon = 1.0

    def forward(self, td: TensorDictBase) -> TensorDictBase:
        action = td["action"]
        explore = torch.rand(action.shape, device=action.device) < self.epsilon
        random_action = torch.randint(
            0, self.num_actions, action.shape, device=action.device, dtype=action.dtype
        )
        td["action"] = torch.where(explore, random_action, action)
        return td


class DQNModule(AgentModule):
    """A DQN agent over a batched :class:`~envs.trading.TradingEnv`."""

    def __init__(
        self,
        env,
        evaluation: Evaluation,
        length: RunLength,
        frames_per_env: int,
        learning_starts: int,
        network: NetworkConfig,
        loss: DQNLossConfig,
        replay: ReplayConfig,
        optim: DQNOptimConfig,
        exploration: ExplorationConfig,
        world_size: int = 1,
    ) -> None:
        super().__init__(
            env,
            evaluation,
            length,
            frames_per_env,
            init_random_frames=learning_starts,
            world_size=world_size,
        )
        if loss.target_update not in TARGET_UPDATES:
            raise ConfigError(
                f"model.loss.target_update is '{loss.target_update}'; choose soft or hard."
            )
        if exploration.schedule not in EPSILON_SCHEDULES:
            raise ConfigError(
                f"model.exploration.schedule is '{exploration.schedule}'; choose linear or "
                "exponential."
            )
        if int(loss.n_steps) < 1:
            raise ConfigError(f"model.loss.n_steps is {loss.n_steps}; use >= 1.")
        if replay.batch_size < 1 or replay.size < replay.batch_size:
            raise ConfigError(
                f"model.replay.size ({replay.size}) must be >= model.replay.batch_size "
                f"({replay.batch_size}) >= 1."
            )
        if optim.updates_per_frame <= 0:
            raise ConfigError("model.optim.updates_per_frame must be > 0.")
        self.loss_cfg, self.replay_cfg, self.optim_cfg = loss, replay, optim
        self.exploration = exploration
        obs_dim = int(env.observation_spec["observation"].shape[-1])
        num_actions = int(env.action_spec.n)
        self.qnet = QNet(obs_dim, num_actions, network)
        action_space = Categorical(n=num_actions)  # unbatched: one env's action
        self.value_network = TensorDictSequential(
            TensorDictModule(self.qnet, in_keys=["observation"], out_keys=["action_value"]),
            QValueModule(spec=action_space),
        )
        self.explore = EpsilonGreedy(num_actions)
        self.loss_module = DQNLoss(
            self.value_network,
            loss_function=loss.loss_function,
            delay_value=True,
            double_dqn=loss.double_dqn,
            action_space=action_space,
        )
        self.loss_module.make_value_estimator(ValueEstimators.TD0, gamma=loss.gamma)
        if loss.target_update == "soft":
            self.target_updater = SoftUpdate(self.loss_module, tau=loss.tau)
        else:
            # TorchRL's HardUpdate copies when its counter, reset to 0 at each copy, reaches
            # the interval: every interval + 1 updates.
            self.target_updater = HardUpdate(
                self.loss_module,
                value_network_update_interval=max(int(loss.hard_update_period) - 1, 0),
            )
        device = env.device
        sampler = (
            PrioritizedSampler(replay.size, alpha=replay.alpha, beta=replay.beta)
            if replay.prioritized
            else RandomSampler()
        )
        self.replay = TensorDictReplayBuffer(
            storage=LazyTensorStorage(replay.size, device=device),
            sampler=sampler,
            batch_size=replay.batch_size,
            priority_key="td_error",
        )
        self.learning_starts = int(learning_starts)
        self._update_debt = 0.0
        self.updates = 0

    # ------------------------------------------------------------------ policies
    def collection_policy(self):
        return TensorDictSequential(self.value_network, self.explore)

    def greedy_policy(self) -> Greedy:
        return lambda obs: self.qnet(obs).argmax(-1)

    def postproc(self):
        if int(self.loss_cfg.n_steps) == 1:
            return None
        return MultiStep(gamma=self.loss_cfg.gamma, n_steps=int(self.loss_cfg.n_steps))

    # ------------------------------------------------------------------ learning
    def learn(self, batch: TensorDictBase) -> dict[str, torch.Tensor]:
        opt = self.optimizers()
        keep = [k for k in REPLAY_KEYS if k in batch.keys(True, True)]
        self.replay.extend(batch.select(*keep).reshape(-1))
        stats: dict[str, torch.Tensor] = {}
        updates = 0
        if self.frames >= self.learning_starts:
            self._update_debt += batch.numel() * self.optim_cfg.updates_per_frame
            updates = int(self._update_debt)
            self._update_debt -= updates
        sums: dict[str, torch.Tensor] = {}
        params = list(self.qnet.parameters())
        for _ in range(updates):
            sample = self.replay.sample()
            out = self.loss_module(sample)
            opt.zero_grad()
            self.manual_backward(out["loss"])
            average_gradients(params)  # the mean over processes (no-op alone)
            if self.optim_cfg.max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(params, self.optim_cfg.max_grad_norm)
            opt.step()
            self.target_updater.step()
            if self.replay_cfg.prioritized:
                self.replay.update_tensordict_priority(sample)
            sums["loss"] = sums.get("loss", 0.0) + out["loss"].detach()
            # DQNLoss's priority is the squared TD error; log its root (reward units).
            sums["td_error"] = sums.get("td_error", 0.0) + sample["td_error"].sqrt().mean()
        self.updates += updates
        if updates:
            stats.update({k: v / updates for k, v in sums.items()})
            with torch.no_grad():  # Q of the taken actions in the last sample (reward units)
                q = self.qnet(sample["observation"]).gather(-1, sample["action"].unsqueeze(-1))
            stats["q_value"] = q.mean()
        self.step_schedulers()
        self.explore.epsilon = self.exploration.epsilon(max(self.frames - self.learning_starts, 0))
        stats["epsilon"] = torch.tensor(self.explore.epsilon)
        stats["updates"] = torch.tensor(float(self.updates))
        stats["replay_size"] = torch.tensor(float(len(self.replay)))
        stats["lr"] = torch.tensor(opt.param_groups[0]["lr"])
        return stats

    def configure_optimizers(self):
        cfg = self.optim_cfg
        opt = torch.optim.AdamW(self.qnet.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        schedule = lr_lambda(cfg.lr_schedule, self.max_iterations, "model.optim.lr_schedule")
        if schedule is None:
            return opt
        return [opt], [torch.optim.lr_scheduler.LambdaLR(opt, schedule)]

    # ------------------------------------------------------------------ checkpoints
    def extra_state(self) -> dict:
        return {
            "replay": replay_state(self.replay),
            "update_debt": self._update_debt,
            "updates": self.updates,
            "epsilon": self.explore.epsilon,
            "hard_update_counter": int(getattr(self.target_updater, "counter", 0)),
        }

    def load_extra_state(self, state: dict) -> None:
        load_replay_state(self.replay, state["replay"])
        self._update_debt = float(state["update_debt"])
        self.updates = int(state["updates"])
        self.explore.epsilon = float(state["epsilon"])
        if hasattr(self.target_updater, "counter"):
            self.target_updater.counter = int(state["hard_update_counter"])


def replay_state(buffer: TensorDictReplayBuffer) -> dict:
    """A replay buffer's state (storage, writer, sampler priorities) as plain tensors and
    numbers, so a checkpoint holding it loads with ``weights_only=True``."""
    state = _plain(buffer.state_dict())
    storage = state["_storage"]
    if isinstance(storage.get("_storage"), dict):  # keep the filled rows only
        filled = int(storage["_len"])
        storage["_storage"] = {k: v[:filled].clone() for k, v in storage["_storage"].items()}
    sampler = buffer.sampler
    if isinstance(sampler, PrioritizedSampler):
        leaves = torch.arange(sampler._max_capacity)
        state["_sampler"]["_sum_tree"] = torch.as_tensor(sampler._sum_tree[leaves])
        state["_sampler"]["_min_tree"] = torch.as_tensor(sampler._min_tree[leaves])
    return state


def load_replay_state(buffer: TensorDictReplayBuffer, state: dict) -> None:
    """Restore what :func:`replay_state` returned into a buffer built with the same config."""
    sampler = buffer.sampler
    saved = dict(state["_sampler"])
    if isinstance(sampler, PrioritizedSampler):
        leaves = torch.arange(sampler._max_capacity)
        for key in ("_sum_tree", "_min_tree"):
            tree = copy.deepcopy(getattr(sampler, key))
            tree[leaves] = saved[key]
            saved[key] = tree
    sampler.load_state_dict(saved)
    storage, stored = buffer._storage, state["_storage"]
    rows = stored.get("_storage")
    if isinstance(rows, dict) and rows:
        # The filled rows (flat "next.observation" keys), padded back to the capacity.
        size = storage.max_size
        padded = {
            k: torch.cat([v, v.new_zeros((size - v.shape[0], *v.shape[1:]))])
            for k, v in rows.items()
        }
        storage._storage = TensorDict(
            padded, batch_size=[size], device=None if storage.device == "auto" else storage.device
        ).unflatten_keys(".")
        storage.initialized = True
    storage._len = int(stored["_len"])
    buffer._writer.load_state_dict(state["_writer"])


def _plain(state):
    """A replay buffer's state dict as nested dicts of tensors and numbers."""
    if isinstance(state, dict):
        return {k: _plain(v) for k, v in state.items()}
    if isinstance(state, TensorDictBase):
        return _plain(dict(state.state_dict()))
    return state
