"""Export bundles: every format reproduces the eager model, metadata is complete, nothing a
user has is overwritten, checkpoints load with weights_only, bad folders exit 2."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from helpers.cli import run_app, run_folders
from helpers.export import FAMILIES, exported, make_run

from datamodules.splits import cpcv_split
from experiments.export.bundle import ExportError, export_model, load_weights
from experiments.export.formats import FORMATS, eager_runner, load_runner
from experiments.export.metadata import market_metadata
from experiments.export.verify import ExportMismatchError, compare
from modules.signature import Signature


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("export_runs")


@pytest.mark.parametrize("family", list(FAMILIES))
def test_every_format_matches_eager_on_the_test_split(family, root):
    cfg, module, data, bundle = exported(family, root)
    meta = json.loads((bundle / "metadata.json").read_text())
    check = meta["verification"]
    assert set(check["max_abs_diff_scaled"]) == set(FORMATS)
    assert all(v <= 1e-5 for v in check["max_abs_diff_scaled"].values())
    assert check["samples"] > 0 and check["split"] == "test"
    # Loaded back here, each format agrees with the eager wrapper on a fresh batch of 5.
    sig_inputs = meta["formats"]["onnx"]["inputs"]
    rng = np.random.default_rng(0)
    batch = tuple(rng.standard_normal((5, *i["shape"][1:])).astype(np.float32) for i in sig_inputs)
    if family == "transformer":  # ages are minutes before the last row
        batch = (batch[0], np.abs(batch[1]) * 100)
    from experiments.export.bundle import best_checkpoint

    load_weights(module, best_checkpoint(bundle.parent))
    ref = eager_runner(module.inference().wrapper)(batch)
    for fmt, name in FORMATS.items():
        got = load_runner(fmt, bundle / name)(batch)
        for r, g in zip(ref, got, strict=True):
            np.testing.assert_allclose(g, r, atol=1e-5, rtol=0)


def test_metadata_records_market_actions_training_range_config_and_versions(root):
    _, _, data, bundle = exported("ppo_mlp", root)
    meta = json.loads((bundle / "metadata.json").read_text())
    assert meta["kind"] == "agent" and meta["model"] == "ppo"
    assert meta["family"] == "modules.agents.ppo.PPOModule"
    assert meta["tickers"] == ["NVDA", "MSFT"] and meta["bar_size"] == "15min"
    assert meta["feature_names"] == list(data.market.feature_names)
    assert set(meta["normalisation"]) == set(meta["feature_names"])
    assert len(meta["observation_names"]) == meta["obs_dim"]
    assert meta["action_map"]["4"] == [0.5, 0.5] and len(meta["action_meanings"]) == 9
    assert meta["recurrent"] is False and meta["state_shape"] is None
    assert meta["train_range"]["first"].startswith(str(data.market.timestamps[0])[:10])
    assert meta["train_spans"] == [meta["train_range"]]  # a time split: one span
    assert meta["split_spans"]["train"] == [meta["split_bars"]["train"]]
    assert len(meta["config_sha256"]) == 64 and "ppo" in meta["config_yaml"]
    assert meta["onnx"]["opset"] == 18 and meta["onnx"]["exporter"] == "dynamo"
    assert {"torch", "onnx", "onnxruntime", "numpy"} <= set(meta["versions"])
    assert set(meta["files"]) == {"last.ckpt", "model.ts", "model.pt2", "model.onnx"}
    gru = json.loads((exported("ppo_gru", root)[3] / "metadata.json").read_text())
    assert gru["recurrent"] is True and gru["state_shape"] == [1, 8]
    assert [i["name"] for i in gru["formats"]["onnx"]["inputs"]] == ["observation", "state"]


def test_an_existing_export_folder_is_kept_and_export_1_written(tmp_path):
    cfg, module, data = make_run("dqn", tmp_path)
    first = export_model(cfg, module, data, tmp_path)
    marker = first / "notes.txt"
    marker.write_text("mine")
    second = export_model(cfg, module, data, tmp_path)
    assert first.name == "export" and second.name == "export-1"
    assert marker.read_text() == "mine"


def test_a_mismatching_format_is_named_with_its_largest_difference():
    sig = Signature(
        {"observation": (3,)},
        {"action": (), "logits": (2,)},
        {},
        {"action": "int64", "logits": "float32"},
    )
    ref = (np.array([0, 1]), np.zeros((2, 2), np.float32))
    off = (ref[0], ref[1] + np.float32(3e-4))
    with pytest.raises(ExportMismatchError, match=r"onnx.*'logits'.*0.0003"):
        compare("onnx", sig, ref, off, 1e-5)
    with pytest.raises(ExportMismatchError, match="torchscript.*different action"):
        compare("torchscript", sig, ref, (np.array([1, 1]), ref[1]), 1e-5)


class _NotWeights:
    pass


def test_checkpoints_load_weights_only_and_refuse_pickled_objects(tmp_path):
    module = torch.nn.Sequential(torch.nn.Linear(2, 2))
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": module.state_dict(), "x": _NotWeights()}, path)
    with pytest.raises(ExportError, match="Python objects beyond tensors"):
        load_weights(module, path)
    with pytest.raises(ExportError, match="does not hold this run's model"):
        torch.save({"state_dict": {"qnet.weight": torch.zeros(2, 2)}}, path)
        load_weights(module, path)


def test_export_cli_refuses_a_folder_that_is_not_a_run_with_exit_2(tmp_path):
    result = run_app(str(tmp_path), output_root=tmp_path, module="experiments.export")
    assert result.returncode == 2
    assert "not a run folder" in result.stderr and "Traceback" not in result.stderr


def test_a_normal_run_ends_with_a_verified_export(out):
    result = run_app(
        "+model=ppo",
        "data.synthetic.sessions=40",
        "env.num_envs=4",
        "++model.collector.frames_per_env=8",
        "++model.collector.iterations=2",
        "++model.eval.every_n_iterations=1",
        "model.network.hidden_sizes=[16]",
        "export.max_verify_samples=64",
        "logger=none",
        "quiet=true",
        "print_config=false",
        output_root=out,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (folder,) = run_folders(out)
    meta = json.loads((folder / "export" / "metadata.json").read_text())
    assert meta["checkpoint"].startswith("best-iter")
    assert meta["metrics"]["test"]["strategy"]


def test_the_metadata_of_a_cpcv_fold_names_each_purged_training_span(root):
    _, _, data, _ = exported("ppo_mlp", root)
    split = cpcv_split(
        data.market.num_bars,
        groups=6,
        test_groups=2,
        fold=3,
        val=0.15,
        purge_bars=3,
        embargo_bars=8,
        window=1,
        min_bars=10,
    )
    meta = market_metadata(dataclasses.replace(data, split=split), "15min", {})
    spans = split.spans("train")
    assert len(spans) > 1 and meta["split_spans"]["train"] == [list(s) for s in spans]
    stamps = data.market.timestamps
    assert meta["train_spans"] == [
        {
            "first": str(np.datetime64(stamps[a], "us")),
            "last": str(np.datetime64(stamps[b - 1], "us")),
        }
        for a, b in spans
    ]
    # The envelope runs across a test group of the fold (0 and 4); no training span touches one.
    lo, hi = meta["split_bars"]["train"]
    assert any(lo < a and b < hi for a, b in meta["split_spans"]["test"])
    for a, b in meta["split_spans"]["test"]:
        assert all(tb <= a or ta >= b for ta, tb in meta["split_spans"]["train"])
