"""LightningModules (forecasters, agents) and their networks."""
