"""``python -m experiments.export``: a run's verified export bundle (TorchScript, torch.export,
ONNX, metadata.json), the same for every model family."""
