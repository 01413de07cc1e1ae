"""PPO on TorchRL's ``ClipPPOLoss``, as a LightningModule (see :mod:`modules.agents.base`).

Per iteration: values of the collected batch and of each next observation under the current
critic, GAE advantages, then ``optim.epochs`` passes of clipped-surrogate updates over shuffled
minibatches (whole env rows for recurrent networks, so gradients flow through time), stopped
early once the mean approximate KL of an epoch exceeds ``optim.target_kl``; then
``optim.critic_epochs`` extra passes that update the critic alone. Actor and critic have their
own optimizers, learning rates and schedules.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping

import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModule, TensorDictSequential
from torch.distributions import Categorical
from torchrl.data import Unbounded
from torchrl.envs import Compose, InitTracker, TensorDictPrimer, TransformedEnv
from torchrl.modules import ProbabilisticActor
from torchrl.objectives import ClipPPOLoss
from torchrl.objectives.value.functional import generalized_advantage_estimate

from datamodules.config import dataclass_from
from modules.agents.base import AgentModule, Evaluation, Greedy
from modules.agents.config import (
    CheckpointConfig,
    CollectorConfig,
    EvalConfig,
    NetworkConfig,
    PPOLossConfig,
    PPOOptimConfig,
)
from modules.agents.inference import PolicyInference, RecurrentPolicyInference
from modules.agents.nets import PolicyNet, ValueNet
from modules.collectives import average_gradients, sum_over_ranks
from modules.gradients import clip_grad_norm
from modules.schedules import lr_lambda
from modules.signature import Inference, float_signature

log = logging.getLogger(__name__)
ACTOR_STATE, CRITIC_STATE = "actor_state", "critic_state"


class PPOModule(AgentModule):
    """A PPO agent over a batched trading env (``conf/model/ppo.yaml``).

    Config sections (mappings or their dataclasses of :mod:`modules.agents.config`):
    ``network`` (the actor's and the critic's trunks), ``collector`` (rollout size and run
    length), ``loss``, ``optim`` (``minibatch_size: auto`` = a quarter of an iteration's
    frames), ``eval`` and ``checkpoint``."""

    def __init__(
        self,
        env,
        evaluation: Evaluation,
        *,
        network: NetworkConfig | Mapping | None = None,
        collector: CollectorConfig | Mapping,
        loss: PPOLossConfig | Mapping | None = None,
        optim: PPOOptimConfig | Mapping | None = None,
        eval: EvalConfig | Mapping | None = None,  # noqa: A002 - the config section's name
        checkpoint: CheckpointConfig | Mapping | None = None,
        name: str = "ppo",
        world_size: int = 1,
    ) -> None:
        network = dataclass_from(NetworkConfig, network, "model.network")
        loss = dataclass_from(PPOLossConfig, loss, "model.loss")
        optim = dataclass_from(PPOOptimConfig, optim, "model.optim")
        if network.recurrent:
            env = with_recurrent_state(env, network.state_shape)
        super().__init__(
            env,
            evaluation,
            collector=collector,
            eval=eval,
            checkpoint=checkpoint,
            name=name,
            world_size=world_size,
        )
        if optim.minibatch_size == "auto":
            # A quarter of the iteration's frames, within the memory num_envs=auto allowed.
            size = max(1, self.frames_per_batch // 4)
            optim = dataclasses.replace(optim, minibatch_size=size)
            log.info("model.optim.minibatch_size=auto: %d frames", size)
        self.net_cfg, self.loss_cfg, self.optim_cfg = network, loss, optim
        obs_dim = int(env.observation_spec["observation"].shape[-1])
        num_actions = int(env.action_spec.n)
        self.recurrent = network.recurrent
        self.policy_net = PolicyNet(obs_dim, num_actions, network)
        self.value_net = ValueNet(obs_dim, network)
        if self.recurrent:
            actor_keys = ["observation", "is_init", ACTOR_STATE]
            actor_out = ["logits", ("next", ACTOR_STATE)]
            critic_keys = ["observation", "is_init", CRITIC_STATE]
            critic_out = ["state_value", ("next", CRITIC_STATE)]
        else:
            actor_keys, actor_out = ["observation"], ["logits"]
            critic_keys, critic_out = ["observation"], ["state_value"]
        self.actor = ProbabilisticActor(
            TensorDictModule(self.policy_net, in_keys=actor_keys, out_keys=actor_out),
            in_keys=["logits"],
            out_keys=["action"],
            distribution_class=Categorical,
            return_log_prob=True,
        )
        self.critic = TensorDictModule(self.value_net, in_keys=critic_keys, out_keys=critic_out)
        self.loss_module = ClipPPOLoss(
            self.actor,
            self.critic,
            clip_epsilon=loss.clip_epsilon,
            entropy_coeff=loss.entropy_coef,
            critic_coeff=loss.critic_coef,
            loss_critic_type=loss.critic_loss,
            normalize_advantage=loss.normalize_advantage,
            clip_value=loss.clip_value,
        )
        self.loss_module.set_keys(sample_log_prob="action_log_prob")

    # ------------------------------------------------------------------ policies
    def collection_policy(self):
        if self.recurrent:  # the critic runs too, so its state follows the episode
            return TensorDictSequential(self.actor, self.critic)
        return self.actor

    def greedy_policy(self) -> Greedy:
        net = self.policy_net
        if not self.recurrent:
            return lambda obs: net(obs).argmax(-1)
        memory: dict[str, torch.Tensor] = {}

        def act(obs: torch.Tensor) -> torch.Tensor:
            if "state" not in memory:
                memory["state"] = torch.zeros(
                    obs.shape[0], *self.net_cfg.state_shape, device=obs.device
                )
            init = torch.zeros(obs.shape[0], 1, dtype=torch.bool, device=obs.device)
            logits, memory["state"] = net(obs, init, memory["state"])
            return logits.argmax(-1)

        return act

    def inference(self) -> Inference:
        """Greedy action and logits from an observation; recurrent policies also take and
        return their state ``(S, H)`` per sample (zeros at an episode's start)."""
        net, obs_dim = self.cpu_copy(self.policy_net), int(self.env.obs_dim)
        actions = int(self.env.actions.num_actions)
        if not self.recurrent:
            sig = float_signature(
                {"observation": (obs_dim,)},
                {"action": (), "logits": (actions,)},
                ints=("action",),
            )
            return Inference(PolicyInference(net), sig, "agent", self.policy_metadata())
        state = tuple(self.net_cfg.state_shape)
        sig = float_signature(
            {"observation": (obs_dim,), "state": state},
            {"action": (), "logits": (actions,), "new_state": state},
            ints=("action",),
        )
        return Inference(RecurrentPolicyInference(net), sig, "agent", self.policy_metadata(state))

    # ------------------------------------------------------------------ learning
    @torch.no_grad()
    def _advantages(self, batch: TensorDictBase) -> None:
        obs, nxt = batch["observation"], batch["next", "observation"]
        if self.recurrent:
            values, after = self.value_net(obs, batch["is_init"], batch[CRITIC_STATE])
            next_values = self.value_net.value_of_next(nxt, after)
        else:
            values, next_values = self.value_net(obs), self.value_net(nxt)
        adv, target = generalized_advantage_estimate(
            self.loss_cfg.gamma,
            self.loss_cfg.gae_lambda,
            values,
            next_values,
            batch["next", "reward"],
            batch["next", "done"],
            batch["next", "terminated"],
            time_dim=-2,
        )
        batch["state_value"] = values
        batch["advantage"] = adv
        batch["value_target"] = target

    def _minibatches(self, batch: TensorDictBase):
        """Shuffled minibatches: frames (MLP) or whole env rows (recurrent), holding only what
        the loss reads (gathering the env's info for every minibatch would dominate)."""
        keys = [
            "observation",
            "action",
            "action_log_prob",
            "advantage",
            "value_target",
            "state_value",
        ]
        if self.recurrent:
            keys += ["is_init", ACTOR_STATE, CRITIC_STATE]
        batch = batch.select(*keys)
        size = self.optim_cfg.minibatch_size
        if self.recurrent:
            rows = max(1, size // batch.shape[1])
            order = torch.randperm(batch.shape[0], device=batch.device)
            return [batch[order[i : i + rows]] for i in range(0, batch.shape[0], rows)]
        flat = batch.reshape(-1)
        order = torch.randperm(flat.shape[0], device=flat.device)
        return [_rows(flat, order[i : i + size]) for i in range(0, flat.shape[0], size)]

    def _step(self, optimizer, params) -> None:
        if self.optim_cfg.max_grad_norm is not None:
            clip_grad_norm(params, self.optim_cfg.max_grad_norm)
        optimizer.step()

    def learn(self, batch: TensorDictBase) -> dict[str, torch.Tensor]:
        opt_actor, opt_critic = self.optimizers()
        self._advantages(batch)
        sums: dict[str, torch.Tensor] = {}
        count, epochs_run, stopped = 0, 0, False
        actor_params = list(self.policy_net.parameters())
        critic_params = list(self.value_net.parameters())
        for _ in range(self.optim_cfg.epochs):
            kl_epoch, n_epoch = 0.0, 0
            for mb in self._minibatches(batch):
                out = self.loss_module(mb)
                actor_loss = out["loss_objective"] + out["loss_entropy"]
                critic_loss = out["loss_critic"]
                opt_actor.zero_grad()
                opt_critic.zero_grad()
                self.manual_backward(actor_loss + critic_loss)
                # The mean over processes (one all_reduce for both networks; no-op alone).
                average_gradients(actor_params, critic_params)
                self._step(opt_actor, actor_params)
                self._step(opt_critic, critic_params)
                # KL(old || new) estimated as mean(r - 1 - log r) >= 0 (r = new/old prob).
                kl = (out["mean_ratio"] - 1.0 + out["kl_approx"]).detach()
                for key in (
                    "loss_objective",
                    "loss_critic",
                    "loss_entropy",
                    "entropy",
                    "clip_fraction",
                ):
                    if key in out:
                        sums[key] = sums.get(key, 0.0) + out[key].detach()
                sums["kl"] = sums.get("kl", 0.0) + kl
                count += 1
                kl_epoch += float(kl)
                n_epoch += 1
            epochs_run += 1
            target = self.optim_cfg.target_kl
            if target is None:
                continue
            # Every process decides on the KL averaged over processes, so all stop together.
            (kl_sum,) = sum_over_ranks([kl_epoch / max(n_epoch, 1)], self.device)
            if kl_sum / self.world_size > target:
                stopped = True
                break
        for _ in range(self.optim_cfg.critic_epochs):
            for mb in self._minibatches(batch):
                out = self.loss_module(mb)
                opt_critic.zero_grad()
                self.manual_backward(out["loss_critic"])
                average_gradients(critic_params)
                self._step(opt_critic, critic_params)
        self.step_schedulers()
        stats = {k: v / count for k, v in sums.items()}
        stats["explained_variance"] = _explained_variance(
            batch["state_value"], batch["value_target"]
        )
        stats["value"] = batch["state_value"].mean()
        stats["advantage_std"] = batch["advantage"].std()
        stats["epochs_run"] = torch.tensor(float(epochs_run))
        stats["kl_early_stop"] = torch.tensor(float(stopped))
        stats["lr_actor"] = torch.tensor(opt_actor.param_groups[0]["lr"])
        stats["lr_critic"] = torch.tensor(opt_critic.param_groups[0]["lr"])
        return stats

    def configure_optimizers(self):
        cfg = self.optim_cfg
        opt_actor = torch.optim.AdamW(
            self.policy_net.parameters(), lr=cfg.actor_lr, weight_decay=cfg.weight_decay
        )
        opt_critic = torch.optim.AdamW(
            self.value_net.parameters(), lr=cfg.critic_lr, weight_decay=cfg.weight_decay
        )
        total = self.max_iterations
        schedule = lr_lambda(cfg.lr_schedule, total, "model.optim.lr_schedule")
        if schedule is None:
            return [opt_actor, opt_critic]
        scheds = [torch.optim.lr_scheduler.LambdaLR(o, schedule) for o in (opt_actor, opt_critic)]
        return [opt_actor, opt_critic], scheds


def with_recurrent_state(env, state_shape: tuple[int, int]):
    """``env`` with ``is_init`` flags and zero actor/critic states at every (partial) reset."""
    n = env.batch_size
    primer = TensorDictPrimer(
        {
            key: Unbounded(shape=(*n, *state_shape), device=env.device)
            for key in (ACTOR_STATE, CRITIC_STATE)
        },
        expand_specs=False,
    )
    return TransformedEnv(env, Compose(InitTracker(), primer))


def _explained_variance(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 - Var(target - pred) / Var(target): 1 = perfect, 0 = no better than a constant."""
    var = target.var()
    if not math.isfinite(float(var)) or float(var) == 0.0:
        return torch.zeros(())
    return 1.0 - (target - pred).var() / var


def _rows(batch: TensorDictBase, index: torch.Tensor) -> TensorDictBase:
    """``batch[index]`` for a 1-D ``batch``: the same rows, gathered with ``index_select`` per
    entry (a third faster than TensorDict's advanced indexing for a PPO minibatch)."""
    return batch.apply(lambda x: x.index_select(0, index), batch_size=[index.numel()])
