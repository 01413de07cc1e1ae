"""DQN on TorchRL's ``DQNLoss``, as a LightningModule (see :mod:`modules.agents.base`).

Double DQN (the online network picks the next action, the target network values it), an
optional dueling head, n-step returns (TorchRL's ``MultiStep`` on each collected batch),
prioritized replay (``PrioritizedSampler``) with importance weights, soft (Polyak) or hard
target updates, and epsilon-greedy exploration decaying linearly or exponentially with the
frames collected. The first ``learning_starts`` frames take uniformly random actions and no
update is made until they are in the buffer; afterwards each iteration makes
``updates_per_frame`` x (frames collected) updates of ``replay.batch_size`` transitions.

TorchRL's ``DQNLoss`` holds the target network's parameters and defines the loss; each update
computes that loss on plain tensors (:meth:`DQNModule.td_loss`: the same operations, so the same
numbers, tested against ``DQNLoss`` itself) and moves the target network with one fused
``lerp`` or copy over its parameters: a profile showed three quarters of an update's time in
TensorDict bookkeeping around a network of a few thousand weights.

With several DDP processes each keeps its own replay buffer fed by its own envs, makes
``updates_per_frame`` x (its own frames) updates of ``replay.batch_size`` of its transitions, and
averages the gradients with the others before each step; the target networks therefore follow
identical weights. ``learning_starts`` and the epsilon schedule count frames over all processes.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable, Mapping

import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModule, TensorDictModuleBase, TensorDictSequential
from torch.nn import functional as F  # noqa: N812
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
from datamodules.errors import ConfigError
from envs.fused import FusedFunction
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
from modules.gradients import clip_grad_norm, drop_grads
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


_DISTANCES = {"l2": F.mse_loss, "l1": F.l1_loss, "smooth_l1": F.smooth_l1_loss}
# What an update reads of a replayed transition (flat keys of the storage).
_LOSS_KEYS = (
    "observation",
    "action",
    "next.observation",
    "next.reward",
    "next.done",
    "next.terminated",
    "steps_to_next_obs",
)
log = logging.getLogger(__name__)

# Where the DQNLoss keeps the Q-network inside its value network (module 0 of the sequence).
_TARGET_PREFIX = "module.0.module."


class EpsilonGreedy(TensorDictModuleBase):
    """Replaces ``action`` by a uniformly random one with probability ``epsilon``."""

    in_keys = ["action"]
    out_keys = ["action"]

    def __init__(self, num_actions: int) -> None:
        super().__init__()
        self.num_actions = num_actions
        self.epsilon = 1.0

    def forward(self, td: TensorDictBase) -> TensorDictBase:
        td["action"] = self.perturb(td["action"])
        return td

    def perturb(self, action: torch.Tensor) -> torch.Tensor:
        """``action`` with each entry replaced by a uniformly random one with probability
        ``epsilon`` (the random draws: one uniform, then one index, per entry)."""
        explore = torch.rand(action.shape, device=action.device) < self.epsilon
        random_action = torch.randint(
            0, self.num_actions, action.shape, device=action.device, dtype=action.dtype
        )
        return torch.where(explore, random_action, action)


class GreedyExploring(TensorDictModuleBase):
    """The collection policy in one module: the Q-network's values, its greedy action and that
    action's value (what QValueModule writes), then epsilon-greedy exploration of the action
    (EpsilonGreedy): the entries and random draws of the two modules in sequence, with a
    fraction of the TensorDict operations per step."""

    in_keys = ["observation"]
    out_keys = ["action", "action_value", "chosen_action_value"]

    def __init__(self, qnet: torch.nn.Module, explore: EpsilonGreedy) -> None:
        super().__init__()
        self.qnet = qnet
        self.explore = explore

    def forward(self, td: TensorDictBase) -> TensorDictBase:
        values = self.qnet(td.get("observation"))
        action = torch.argmax(values, dim=-1).to(torch.long)
        chosen = values.gather(-1, action.unsqueeze(-1))
        td.set("action_value", values)
        td.set("chosen_action_value", chosen)
        td.set("action", self.explore.perturb(action))
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
        self.compile_update, why = _compile_choice(
            optim, self.qnet, torch.device(device), self.planned_updates()
        )
        log.info("DQN update: %s (%s)", "compiled" if self.compile_update else "eager", why)
        self._fused_grads: FusedFunction | None = None

    def planned_updates(self) -> int | None:
        """Gradient updates this process plans over the run: its frames after
        ``learning_starts`` times ``model.optim.updates_per_frame``; None for a run whose
        length is in episodes."""
        if self.max_iterations is None:
            return None
        frames = self.max_iterations * self.frames_per_batch
        after = max(frames - self.learning_starts / self.world_size, 0.0)
        return int(after * float(self.optim_cfg.updates_per_frame))

    # ------------------------------------------------------------------ policies
    def collection_policy(self):
        return GreedyExploring(self.qnet, self.explore)

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
    def td_loss(
        self,
        rows: Mapping[str, torch.Tensor],
        target: Mapping[str, torch.Tensor] | Callable[[torch.Tensor], torch.Tensor] | None = None,
        online: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(the loss, the squared TD error of each transition (B, 1)) of replayed transitions.

        ``rows``: a batch by flat key (``observation``, ``action``, ``next.reward``...; a
        sampled TensorDict's ``flatten_keys(".")`` works); ``target``: the target network, or
        its tensors by parameter name (default: the DQNLoss's, looked up), or any function of an
        observation batch; ``online``: the online network (default: ``self.qnet``).

        TorchRL's ``DQNLoss`` with its TD(0) estimator, on plain tensors: the Q-value of the
        action taken against ``reward + gamma ** steps_to_next_obs * (1 - terminated) *`` the
        target network's value of the next observation (at the online network's greedy action
        with double DQN, else at its own), the ``loss_function`` distance weighted by the
        prioritized replay's importance weights (a weighted mean), or a plain mean."""
        reward = rows.get("next.reward")
        done = rows.get("next.done")
        terminated = rows.get("next.terminated", done)
        action = rows.get("action")
        qnet = self.qnet if online is None else online
        pred = qnet(rows.get("observation"))
        pred = torch.gather(pred, -1, index=action.unsqueeze(-1)).squeeze(-1)
        next_obs = rows.get("next.observation")
        if not callable(target):
            target = self._target_network(target or self._target_parameters())
        with torch.no_grad():
            target_q = target(next_obs)
            if self.loss_cfg.double_dqn:
                next_action = torch.argmax(qnet(next_obs), dim=-1).to(torch.long)
            else:
                next_action = torch.argmax(target_q, dim=-1).to(torch.long)
            next_value = torch.gather(target_q, -1, index=next_action.unsqueeze(-1))
            gamma = self.loss_module.value_estimator.gamma.to(reward.device)
            steps = rows.get("steps_to_next_obs", None)
            if steps is not None:
                gamma = gamma ** steps.view_as(reward)
            not_terminated = (~terminated).int()
            value = (reward + gamma * not_terminated * next_value).squeeze(-1)
            priority = (pred - value).pow(2).unsqueeze(-1)
        distance = _DISTANCES[self.loss_cfg.loss_function](pred, value, reduction="none")
        weights = rows.get("priority_weight", None)
        if weights is None:
            return distance.mean(), priority
        return (distance * weights).sum() / weights.sum(), priority

    def _loss_and_grads(
        self, rows: dict[str, torch.Tensor], *tensors: torch.Tensor
    ) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
        """(the gradients of the Q-network's parameters, the squared TD errors, the loss) of
        :meth:`td_loss` on ``rows``; ``tensors``: the online parameters, then the target's, in
        ``named_parameters`` order. A pure function of its inputs, so one graph traces it."""
        names = [name for name, _ in self.qnet.named_parameters()]
        leaves = [t.detach().requires_grad_(True) for t in tensors[: len(names)]]
        online = dict(zip(names, leaves, strict=True))
        target = dict(zip(names, tensors[len(names) :], strict=True))
        loss, priority = self.td_loss(
            rows,
            lambda obs: torch.func.functional_call(self.qnet, target, (obs,)),
            lambda obs: torch.func.functional_call(self.qnet, online, (obs,)),
        )
        grads = torch.autograd.grad(loss, leaves)
        return list(grads), priority, loss.detach()

    def _fused_update(
        self, rows: dict[str, torch.Tensor], online: list[torch.Tensor], target: list[torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(the loss, the squared TD errors) of one update by the compiled graph, with the
        gradients set on the parameters (``model.optim.compile``); compiled at the first call,
        which logs how and in how long."""
        fused = self._fused_grads
        first = fused is None
        if first:
            fused = self._fused_grads = FusedFunction(self._loss_and_grads, "DQN update")
            start = time.perf_counter()
        grads, priority, loss = fused(rows, *online, *target)
        if first:
            seconds = time.perf_counter() - start
            log.info("DQN update compiled (%s) in %.1f s", fused.path, seconds)
        for param, grad in zip(self.qnet.parameters(), grads, strict=True):
            param.grad = grad
        return loss, priority

    def _check_precision(self) -> None:
        """The compiled update computes the gradients without Lightning's precision plugin:
        under another trainer precision than 32-true, ``model.optim.compile=true`` is a config
        error and ``auto`` steps eagerly (logged)."""
        precision = str(self.trainer.precision)
        if precision in ("32-true", "32"):
            return
        if self.optim_cfg.compile is True:
            raise ConfigError(
                f"model.optim.compile=true computes the gradients without Lightning's "
                f"precision plugin; trainer precision is {precision}: use 32-true or set "
                "model.optim.compile=false."
            )
        self.compile_update = False
        log.info("DQN update: eager (model.optim.compile=auto, trainer precision %s)", precision)

    def _sample(self, stored: Mapping[str, torch.Tensor]) -> tuple[dict, torch.Tensor]:
        """(a replayed batch by flat key, its storage indices): what the replay buffer's
        ``sample()`` returns (the same sampler call, so the same random draws), gathered from
        ``stored`` (its storage by flat key) without building TensorDicts."""
        replay = self.replay
        index, info = replay._sampler.sample(replay._storage, int(self.replay_cfg.batch_size))
        device = next(iter(stored.values())).device
        index = torch.as_tensor(index, device=device)
        # index_select: the same rows as stored[key][index], without advanced indexing's cost.
        rows = {key: stored[key].index_select(0, index) for key in _LOSS_KEYS if key in stored}
        weights = info.get("priority_weight")
        if weights is not None:
            rows["priority_weight"] = torch.as_tensor(weights, device=device)
        return rows, index

    def _target_network(self, target: Mapping[str, torch.Tensor]) -> torch.nn.Module:
        """The Q-network's architecture over the target tensors ``target`` (shared, not
        copied: the target updates move them in place), in the Q-network's train/eval mode.
        Kept out of the module's state (the DQNLoss holds the target in checkpoints)."""
        net = self.__dict__.get("_target_net")
        if net is None:
            net = copy.deepcopy(self.qnet).requires_grad_(False)
            self.__dict__["_target_net"] = net
        for name, param in net.named_parameters():
            param.data = target[name]
        return net.train(self.qnet.training)

    def _target_parameters(self) -> dict[str, torch.Tensor]:
        """The target network's tensors by the Q-network's parameter names (the ``DQNLoss``
        holds them under the value network's prefix)."""
        target = self.loss_module.target_value_network_params.flatten_keys(".")
        return {name: target.get(_TARGET_PREFIX + name) for name, _ in self.qnet.named_parameters()}

    def _target_pairs(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """(the online parameters, their target tensors), in the same order."""
        target = self._target_parameters()
        online = [p for _, p in self.qnet.named_parameters()]
        return [p.data for p in online], [target[name] for name, _ in self.qnet.named_parameters()]

    def _update_target(self, online: list[torch.Tensor], target: list[torch.Tensor]) -> None:
        """One step of the target updater (``SoftUpdate``: lerp by ``1 - eps``; ``HardUpdate``:
        a copy when its counter reaches the interval), over every tensor at once."""
        updater = self.target_updater
        if isinstance(updater, SoftUpdate):
            torch._foreach_lerp_(target, online, 1 - updater.eps)
            return
        if updater.counter == updater.value_network_update_interval:
            torch._foreach_copy_(target, online)
            updater.counter = 0
        else:
            updater.counter += 1

    def learn(self, batch: TensorDictBase) -> dict[str, torch.Tensor]:
        opt = self.optimizers()
        keep = [k for k in REPLAY_KEYS if k in batch.keys(True, True)]
        self.replay.extend(batch.select(*keep).reshape(-1))
        stats: dict[str, torch.Tensor] = {}
        updates = 0
        if self.compile_update and self._fused_grads is None:
            self._check_precision()
        if self.frames >= self.learning_starts:
            self._update_debt += batch.numel() * self.optim_cfg.updates_per_frame
            updates = int(self._update_debt)
            self._update_debt -= updates
        sums: dict[str, torch.Tensor] = {}
        params = list(self.qnet.parameters())
        if updates:
            online, target = self._target_pairs()
            target_net = self._target_network(self._target_parameters())
            stored = self.replay._storage._storage.flatten_keys(".")
            stored = {key: stored.get(key) for key in stored.keys()}  # noqa: SIM118 (a TensorDict)
        for _ in range(updates):
            rows, index = self._sample(stored)
            if self.compile_update:
                loss, priority = self._fused_update(rows, online, target)
            else:
                loss, priority = self.td_loss(rows, target_net)
                drop_grads(params)  # opt.zero_grad(), without its per-call work
                self.manual_backward(loss)
            average_gradients(params)  # the mean over processes (no-op alone)
            if self.optim_cfg.max_grad_norm is not None:
                clip_grad_norm(params, self.optim_cfg.max_grad_norm)
            opt.step()
            self._update_target(online, target)
            if self.replay_cfg.prioritized:  # one priority per transition: (B, 1) -> (B,)
                self.replay.update_priority(index, priority.reshape(-1))
            sums["loss"] = sums.get("loss", 0.0) + loss.detach()
            # The priority is the squared TD error; log its root (reward units).
            sums["td_error"] = sums.get("td_error", 0.0) + priority.sqrt().mean()
        self.updates += updates
        if updates:
            stats.update({k: v / updates for k, v in sums.items()})
            with torch.no_grad():  # Q of the taken actions in the last sample (reward units)
                q = self.qnet(rows["observation"]).gather(-1, rows["action"].unsqueeze(-1))
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
        # fused: one kernel per tensor for the whole AdamW update (on a CPU about a third of the
        # per-tensor loop's time for this small network: a DQN makes thousands of small steps).
        # It rounds differently from the loop in the last bits, run to run it is deterministic.
        opt = torch.optim.AdamW(
            self.qnet.parameters(),
            lr=cfg.lr,
            weight_decay=cfg.weight_decay,
            **_fused_if_supported(self.qnet),
        )
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


def _compile_choice(
    optim: DQNOptimConfig, qnet: torch.nn.Module, device: torch.device, planned: int | None
) -> tuple[bool, str]:
    """Whether the update is compiled for ``model.optim.compile`` (true, false or auto), and
    why, in words for the log. One traced graph cannot replace the eager update off a CPU or
    with dropout (random draws): a config error for true, eager for auto."""
    choice = optim.compile
    if choice is False:
        return False, "model.optim.compile=false"
    dropout = any(isinstance(m, torch.nn.Dropout) and m.p > 0 for m in qnet.modules())
    if choice is True:
        if device.type != "cpu":
            raise ConfigError(
                f"model.optim.compile=true is for CPU runs; this env runs on {device}: set "
                "model.optim.compile=false."
            )
        if dropout:
            raise ConfigError(
                "model.optim.compile=true traces the update once and cannot take dropout's "
                "random draws: set model.network.dropout=0 or model.optim.compile=false."
            )
        return True, "model.optim.compile=true"
    least = int(optim.compile_min_updates)
    if device.type != "cpu":
        return False, f"model.optim.compile=auto: the env runs on {device}, not a CPU"
    if dropout:
        return False, "model.optim.compile=auto: the network has dropout"
    if planned is None:
        return False, "model.optim.compile=auto: the run's length is in episodes"
    sign = ">=" if planned >= least else "<"
    return planned >= least, (
        f"model.optim.compile=auto: {planned:,} planned updates {sign} "
        f"model.optim.compile_min_updates={least:,}"
    )


def _fused_if_supported(net: torch.nn.Module) -> dict[str, bool]:
    """``fused=True`` for AdamW where its fused kernel runs (CPU and CUDA floating-point
    parameters), else the per-tensor ``foreach`` update."""
    kinds = {(p.device.type, p.dtype.is_floating_point) for p in net.parameters()}
    if kinds and all(device in ("cpu", "cuda") and floating for device, floating in kinds):
        return {"fused": True}
    return {"foreach": True}
