"""A synchronous advantage actor-critic (A2C) agent on TorchRL's ``A2CLoss``.

One gradient step per collected batch: GAE advantages under the current critic, then the
policy-gradient, entropy and critic losses of ``A2CLoss`` on the whole batch, one AdamW
optimizer for both networks. Everything else (collection, evaluation against the baselines,
logging, exact resume, DDP, curricula, export) comes from
:class:`modules.agents.base.AgentModule`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModule
from torch.distributions import Categorical
from torchrl.modules import ProbabilisticActor
from torchrl.objectives import A2CLoss
from torchrl.objectives.value.functional import generalized_advantage_estimate

from datamodules.config import dataclass_from
from datamodules.errors import ConfigError
from modules.agents.base import AgentModule, Evaluation, Greedy
from modules.agents.config import (
    CheckpointConfig,
    CollectorConfig,
    EvalConfig,
    NetworkConfig,
)
from modules.agents.inference import PolicyInference
from modules.agents.nets import PolicyNet, ValueNet
from modules.collectives import average_gradients
from modules.signature import Inference, float_signature


@dataclass(frozen=True)
class A2CConfig:
    """``model.a2c``: ``gamma`` discount per bar, ``gae_lambda``, ``entropy_coef`` and
    ``critic_coef`` (loss weights), ``lr`` (AdamW), ``max_grad_norm`` (null = off)."""

    gamma: float = 0.99
    gae_lambda: float = 0.95
    entropy_coef: float = 0.01
    critic_coef: float = 0.5
    lr: float = 7e-4
    max_grad_norm: float | None = 0.5

    def __post_init__(self) -> None:
        if not 0.0 <= self.gamma <= 1.0 or not 0.0 <= self.gae_lambda <= 1.0:
            raise ConfigError("model.a2c.gamma and gae_lambda must be in [0, 1].")
        if not self.lr > 0:
            raise ConfigError(f"model.a2c.lr is {self.lr}; use a learning rate > 0.")


class A2CModule(AgentModule):
    """An A2C agent with MLP actor and critic trunks (``model.network``)."""

    def __init__(
        self,
        env,
        evaluation: Evaluation,
        *,
        network: NetworkConfig | Mapping | None = None,
        collector: CollectorConfig | Mapping,
        a2c: A2CConfig | Mapping | None = None,
        eval: EvalConfig | Mapping | None = None,  # noqa: A002 - the config section's name
        checkpoint: CheckpointConfig | Mapping | None = None,
        name: str = "a2c",
        world_size: int = 1,
    ) -> None:
        super().__init__(
            env,
            evaluation,
            collector=collector,
            eval=eval,
            checkpoint=checkpoint,
            name=name,
            world_size=world_size,
        )
        self.net_cfg = dataclass_from(NetworkConfig, network, "model.network")
        if self.net_cfg.recurrent:
            raise ConfigError("model.network: this A2C agent uses MLP trunks (model/network=mlp).")
        self.cfg = dataclass_from(A2CConfig, a2c, "model.a2c")
        obs_dim = int(env.obs_dim)
        self.policy_net = PolicyNet(obs_dim, int(env.actions.num_actions), self.net_cfg)
        self.value_net = ValueNet(obs_dim, self.net_cfg)
        self.actor = ProbabilisticActor(
            TensorDictModule(self.policy_net, in_keys=["observation"], out_keys=["logits"]),
            in_keys=["logits"],
            out_keys=["action"],
            distribution_class=Categorical,
            return_log_prob=True,
        )
        critic = TensorDictModule(self.value_net, in_keys=["observation"], out_keys=["state_value"])
        self.loss_module = A2CLoss(
            self.actor,
            critic,
            entropy_coeff=self.cfg.entropy_coef,
            critic_coeff=self.cfg.critic_coef,
            loss_critic_type="smooth_l1",
        )

    def collection_policy(self):
        return self.actor

    def greedy_policy(self) -> Greedy:
        net = self.policy_net
        return lambda obs: net(obs).argmax(-1)

    def learn(self, batch: TensorDictBase) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        with torch.no_grad():
            values = self.value_net(batch["observation"])
            next_values = self.value_net(batch["next", "observation"])
            advantage, target = generalized_advantage_estimate(
                cfg.gamma,
                cfg.gae_lambda,
                values,
                next_values,
                batch["next", "reward"],
                batch["next", "done"],
                batch["next", "terminated"],
                time_dim=-2,
            )
        flat = batch.select("observation", "action").reshape(-1)
        flat["advantage"] = advantage.reshape(-1, 1)
        flat["value_target"] = target.reshape(-1, 1)
        out = self.loss_module(flat)
        loss = out["loss_objective"] + out["loss_entropy"] + out["loss_critic"]
        opt = self.optimizers()
        opt.zero_grad()
        self.manual_backward(loss)
        params = [*self.policy_net.parameters(), *self.value_net.parameters()]
        average_gradients(params)
        if cfg.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
        opt.step()
        return {
            "loss_objective": out["loss_objective"].detach(),
            "loss_critic": out["loss_critic"].detach(),
            "loss_entropy": out["loss_entropy"].detach(),
            "entropy": out["entropy"].detach(),
            "value": values.mean(),
        }

    def configure_optimizers(self):
        params = [*self.policy_net.parameters(), *self.value_net.parameters()]
        return torch.optim.AdamW(params, lr=self.cfg.lr)

    def inference(self) -> Inference:
        sig = float_signature(
            {"observation": (int(self.env.obs_dim),)},
            {"action": (), "logits": (int(self.env.actions.num_actions),)},
            ints=("action",),
        )
        net = self.cpu_copy(self.policy_net)
        return Inference(PolicyInference(net), sig, "agent", self.policy_metadata())
