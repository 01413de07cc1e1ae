"""Policy.load / Forecaster.load: the exported model, the stored normalisation and feature
pipeline applied as training did, and bad bundles or input refused."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch
from helpers.export import copy_bundle, exported

from datamodules.bars import align, bar_minutes, resample
from datamodules.schema import validate_bars
from datamodules.synthetic import SyntheticConfig, generate_bars
from datamodules.windows import WindowDataModule
from experiments.inference import BundleError, Forecaster, InputShapeError, Policy


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("inference_runs")


def _raw_bars(cfg) -> pl.DataFrame:
    """The resampled bars the pipeline featured, rebuilt from the run's data config."""
    d = cfg.data
    minutes = bar_minutes(d.bar_size)
    synth = SyntheticConfig(**{k: v for k, v in d.synthetic.items()})
    raw = validate_bars(generate_bars(list(d.tickers), minutes, int(d.seed), synth))
    return resample(align(raw, list(d.tickers), float(d.min_aligned_share)), minutes, d.bar_size)


def test_raw_bars_through_forecaster_load_match_the_training_datamodule(root):
    cfg, module, data, bundle = exported("transformer", root)
    forecaster = Forecaster.load(bundle)
    dm = WindowDataModule(data, int(cfg.model.task.num_classes))
    item = dm.dataset("test")[5]
    t = int(item["t"])
    bars = _raw_bars(cfg).filter(pl.col("timestamp") <= data.market.timestamps[t])
    window, age = forecaster.window_from_bars(bars)
    np.testing.assert_allclose(window, item["x"].numpy(), atol=1e-6, rtol=0)
    np.testing.assert_array_equal(age, item["age"].numpy())
    with torch.no_grad():
        module.net.eval()
        eager = module(item["x"][None], item["age"][None])[0].numpy()
    np.testing.assert_allclose(forecaster.predict_bars(bars), eager, atol=1e-5)
    # normalize() on raw features is the pipeline's z-score of the training split.
    raw = window[:, :12] * forecaster.std[0] + forecaster.mean[0]
    np.testing.assert_allclose(forecaster.normalize(raw[:, None, :]), window[:, :12], atol=1e-5)


def test_raw_bars_through_policy_load_give_the_env_observation(root):
    cfg, module, data, bundle = exported("ppo_mlp", root)
    policy = Policy.load(bundle)
    market = data.market
    t = int(data.split.test[0]) + 5
    bars = _raw_bars(cfg).filter(pl.col("timestamp") <= market.timestamps[t])
    held = np.linspace(-0.5, 0.5, market.num_assets).astype(np.float32)
    obs = policy.observation_from_bars(bars, held)
    w = int(policy.metadata["window"])
    expected = [market.features[t - w + 1 : t + 1].reshape(-1), held]
    if any(n.startswith("calendar.") for n in policy.observation_names):
        expected.append(market.time_features[t])
    np.testing.assert_allclose(obs, np.concatenate(expected), atol=1e-5)
    action, _ = policy(obs)
    assert 0 <= action < len(policy.action_map)
    with pytest.raises(InputShapeError, match="one weight per ticker"):
        policy.observation_from_bars(bars, held=[0.0] * (market.num_assets + 1))


@pytest.mark.parametrize("runtime", ["onnxruntime", "torchscript"])
def test_policy_load_gives_the_eager_greedy_action_and_logits(root, runtime):
    _, module, data, bundle = exported("ppo_mlp", root)
    policy = Policy.load(bundle, runtime=runtime)
    obs = np.random.default_rng(1).standard_normal((7, policy.obs_dim)).astype(np.float32)
    with torch.no_grad():
        logits = module.policy_net(torch.from_numpy(obs)).numpy()
    action, got = policy(obs[0])
    assert action == int(logits[0].argmax()) and isinstance(action, int)
    np.testing.assert_allclose(got, logits[0], atol=1e-5)
    kept = got.copy()
    policy(obs[1])  # the next call does not write into what the last one returned
    np.testing.assert_array_equal(got, kept)
    actions, batch = policy(obs)
    np.testing.assert_array_equal(actions, logits.argmax(-1))
    np.testing.assert_allclose(batch, logits, atol=1e-5)


def test_a_recurrent_policy_keeps_its_state_and_reset_restarts_it(root):
    _, _, _, bundle = exported("ppo_gru", root)
    policy = Policy.load(bundle)
    obs = np.random.default_rng(2).standard_normal((4, policy.obs_dim)).astype(np.float32)
    inside = [policy(o)[1] for o in obs]
    state, explicit = None, []
    for o in obs:
        _, logits, state = policy.step(o, state)
        explicit.append(logits)
    np.testing.assert_allclose(np.stack(inside), np.stack(explicit), atol=1e-6)
    assert not np.allclose(inside[0], inside[1])
    policy.reset()
    np.testing.assert_allclose(policy(obs[0])[1], inside[0], atol=1e-6)


def test_a_changed_bundle_file_is_refused(root, tmp_path):
    bundle = copy_bundle(exported("dqn", root)[3], tmp_path / "export")
    with open(bundle / "model.onnx", "r+b") as fh:
        fh.seek(-8, 2)
        fh.write(b"\x00" * 8)
    with pytest.raises(BundleError, match=r"model.onnx does not match the sha256"):
        Policy.load(bundle)
    (bundle / "model.onnx").unlink()
    with pytest.raises(BundleError, match="model.onnx .* is missing"):
        Policy.load(bundle)


def test_input_of_the_wrong_shape_or_columns_or_kind_is_refused(root):
    _, _, _, bundle = exported("dqn", root)
    policy = Policy.load(bundle)
    with pytest.raises(InputShapeError, match=rf"shape \(3,\).*takes \({policy.obs_dim},\)"):
        policy(np.zeros(3, np.float32))
    names = list(policy.observation_names)
    names[0] = "AAA.price"
    with pytest.raises(InputShapeError, match="column 0 is 'AAA.price'"):
        policy.check_names(names)
    with pytest.raises(BundleError, match="Policy.load"):
        Forecaster.load(bundle)
    forecaster = Forecaster.load(exported("transformer", root)[3])
    with pytest.raises(InputShapeError, match="needs age"):
        forecaster(np.zeros(forecaster._shape, np.float32))
