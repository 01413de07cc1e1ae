"""Pure inference from an ``export/`` bundle: numpy (or raw bars) in, action or class
probabilities out.

    policy = Policy.load("outputs/runs/<date>/<time>_ppo/export")
    action, logits = policy(observation)          # (obs_dim,) float32 -> int, (num_actions,)

    forecaster = Forecaster.load(".../<time>_lstm/export")
    probs = forecaster(window)                      # (L, F_in) normalised -> (A, C)
    probs = forecaster.predict_bars(bars)           # raw OHLCV bars -> (A, C)

Runtime: ONNX Runtime when importable (one intra-op thread, sequential execution, all graph
optimisations), else the TorchScript file. Loading checks every file against the sha256
recorded in ``metadata.json`` (a changed bundle is refused) and never unpickles arbitrary
objects (``onnxruntime`` / ``torch.jit.load``). Imports stay light: numpy and json at import
time; onnxruntime, torch and polars only when needed.
"""

from experiments.inference.bundle import FORMAT_VERSION, BundleError, InputShapeError, sha256_file
from experiments.inference.forecaster import Forecaster
from experiments.inference.policy import Policy

__all__ = [
    "FORMAT_VERSION",
    "BundleError",
    "Forecaster",
    "InputShapeError",
    "Policy",
    "sha256_file",
]
