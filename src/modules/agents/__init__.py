"""The RL agents: the agent half of the model-family protocol (``base``), PPO and DQN on TorchRL
losses, their networks, config sections, replay, rollouts, envs per process and DDP."""
