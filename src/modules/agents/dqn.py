"""DQN on TorchRL's ``DQNLoss``, as a LightningModule (see :mod:`modules.agents.base`).

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

from collections.abc import Mapping

import torch
from tensordict import TensorDictBase
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

from datamodules.config import dataclass_from
from modules.agents.base import AgentModule, Evaluation, Greedy
from modules.agents.config import (
    CheckpointConfig,
    DQNLossConfig,
    DQNOptimConfig,
    EvalConfig,
    ExplorationConfig,
    NetworkConfig,
    ReplayCollectorConfig,
    ReplayConfig,
)
from modules.agents.inference import QInference
from modules.agents.nets import QNet
from modules.agents.replay import load_replay_state, replay_state
from modules.collectives import average_gradients
from modules.schedules import lr_lambda
from modules.signature import Inference, float_signature

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
    """A DQN agent over a batched trading env (``conf/model/dqn.yaml``).

    Config sections (mappings or their dataclasses of :mod:`modules.agents.config`):
    ``network`` (an MLP trunk, optionally ``dueling``), ``collector`` (with
    ``learning_starts``), ``loss``, ``replay``, ``optim``, ``exploration``, ``eval`` and
    ``checkpoint``."""

    collector_config = ReplayCollectorConfig

    def __init__(
        self,
        env,
        evaluation: Evaluation,
        *,
        network: NetworkConfig | Mapping | None = None,
        collector: ReplayCollectorConfig | Mapping,
        loss: DQNLossConfig | Mapping | None = None,
        replay: ReplayConfig | Mapping | None = None,
        optim: DQNOptimConfig | Mapping | None = None,
        exploration: ExplorationConfig | Mapping | None = None,
        eval: EvalConfig | Mapping | None = None,  # noqa: A002 - the config section's name
        checkpoint: CheckpointConfig | Mapping | None = None,
        name: str = "dqn",
        world_size: int = 1,
    ) -> None:
        collector = dataclass_from(ReplayCollectorConfig, collector, "model.collector")
        network = dataclass_from(NetworkConfig, network, "model.network")
        loss = dataclass_from(DQNLossConfig, loss, "model.loss")
        replay = dataclass_from(ReplayConfig, replay, "model.replay")
        optim = dataclass_from(DQNOptimConfig, optim, "model.optim")
        exploration = dataclass_from(ExplorationConfig, exploration, "model.exploration")
        learning_starts = collector.learning_starts
        super().__init__(
            env,
            evaluation,
            collector=collector,
            eval=eval,
            checkpoint=checkpoint,
            name=name,
            world_size=world_size,
            init_random_frames=learning_starts,
        )
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

    def inference(self) -> Inference:
        """Greedy action and Q-values from an observation."""
        actions = int(self.env.actions.num_actions)
        sig = float_signature(
            {"observation": (int(self.env.obs_dim),)},
            {"action": (), "q_values": (actions,)},
            ints=("action",),
        )
        return Inference(QInference(self.cpu_copy(self.qnet)), sig, "agent", self.policy_metadata())

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
