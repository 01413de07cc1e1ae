"""W&B artifacts with lineage: a run uses its market data as a ``dataset`` artifact (named by
the feature-cache key) and logs its verified export bundle as a ``model`` artifact (aliases
latest and best, metadata = metadata.json), both queued offline for ``wandb sync``; the
artifact's files load with Policy.load and act as export/ does; a curriculum phase uses the
previous phase's model. The records are read back from the offline run's transaction log with
W&B's own protobuf classes."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from helpers.cli import TINY_AGENT, app_env, run_app, run_folders
from helpers.configs import compose

from datamodules.errors import ConfigError
from experiments.compare.offline import _log_file, _records, offline_runs
from experiments.config.job import check_job
from experiments.inference import Policy
from experiments.inference.bundle import BundleError, resolve_bundle
from experiments.run.artifacts import BARS_AUTO_ROWS, dataset_artifact

RUN = [
    "+model=ppo",
    "env=dual_ticker",
    *(o for o in TINY_AGENT if not o.startswith("++model.collector.iterations=")),
    "++model.collector.iterations=2",
    "quiet=true",
]


def artifacts_of(run_folder: Path) -> list:
    """The artifact records (``wandb_internal_pb2.ArtifactRecord``) of one offline run."""
    from wandb.proto import wandb_internal_pb2 as pb

    found = []
    for payload in _records(_log_file(run_folder)):
        record = pb.Record()
        record.ParseFromString(payload)
        if record.WhichOneof("record_type") == "artifact":
            found.append(record.artifact)
    return found


def download(record, into: Path) -> Path:
    """What downloading the artifact gives: its files under their names in the artifact (the
    staged copies the offline run keeps for ``wandb sync``)."""
    for entry in record.manifest.contents:
        target = into / entry.path
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(entry.local_path, target)
    return into


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[Path, list, str]:
    """One exported agent run with the default (offline W&B) logger: its folder, its artifact
    records and its feature-cache key (the name of its entry in the cache folder)."""
    base = tmp_path_factory.mktemp("artifacts")
    env = {**app_env(), "WANDB_DATA_DIR": str(base / "wandb-data")}  # staged artifact files
    done = run_app(*RUN, output_root=base / "outputs", env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    (folder,) = run_folders(base / "outputs")
    (wandb_run,) = offline_runs(folder)
    (entry,) = (base / "outputs" / "cache").glob("*.parquet")
    return folder, artifacts_of(wandb_run), entry.stem


def of_type(records: list, kind: str) -> list:
    return [r for r in records if r.type == kind]


def test_the_run_logs_its_export_bundle_as_a_model_artifact(run):
    folder, records, _ = run
    (model,) = of_type(records, "model")
    # The run's name (its shaping overrides) with what W&B refuses replaced, within 128 chars.
    assert model.name.startswith("ppo-env-dual_ticker-data.synthetic.sessions-60-env.num_envs-8")
    assert re.fullmatch(r"[A-Za-z0-9_.-]{1,128}", model.name)
    assert {"latest", "best"} <= set(model.aliases)
    assert not model.use_after_commit  # an output of the run
    metadata = json.loads((folder / "export" / "metadata.json").read_text())
    assert json.loads(model.metadata) == metadata
    listed = {e.path for e in model.manifest.contents}
    assert listed == {p.name for p in (folder / "export").iterdir()}
    assert json.loads((folder / "model_artifact.json").read_text())["name"] == model.name


def test_the_run_uses_its_market_data_as_a_dataset_artifact_named_by_its_content(run):
    folder, records, key = run
    (dataset,) = of_type(records, "dataset")
    assert dataset.use_after_commit  # an input: used once `wandb sync` commits it
    assert dataset.name == f"market-{key}"
    meta = json.loads(dataset.metadata)
    assert meta["fingerprint"] == key and meta["tickers"] == ["NVDA", "MSFT"]
    assert meta["bars"] == 1500 and meta["bars_included"]  # small: the bars go with it
    listed = {e.path for e in dataset.manifest.contents}
    assert listed == {"dataset.json", "data_quality.json", "bars.parquet"}
    quality = next(e for e in dataset.manifest.contents if e.path == "data_quality.json")
    assert Path(quality.local_path).read_text() == (folder / "data_quality.json").read_text()


def test_the_report_logged_last_shows_the_exports_deployment_gate(run):
    folder, _, _ = run
    (wandb_run,) = offline_runs(folder)
    logged = sorted(
        (wandb_run / "files" / "media" / "html").glob("report_*.html"),
        key=lambda p: int(p.name.split("_")[1]),
    )
    assert len(logged) == 2  # at the report, then once the export measured its gate
    assert logged[-1].read_text() == (folder / "report.html").read_text()
    assert "export/: export.sla passed" in logged[-1].read_text()


def test_policy_load_of_the_artifact_folder_acts_as_export_does(run, tmp_path):
    folder, records, _ = run
    (model,) = of_type(records, "model")
    downloaded = download(model, tmp_path / "artifact")
    ours, theirs = Policy.load(folder / "export"), Policy.load(downloaded)
    obs = np.random.default_rng(0).normal(size=(64, ours.obs_dim)).astype(np.float32)
    a1, v1 = ours(obs)
    a2, v2 = theirs(obs)
    assert np.array_equal(a1, a2) and np.allclose(v1, v2, atol=0)


def test_an_artifact_path_that_is_not_one_is_one_paragraph():
    with pytest.raises(BundleError, match="not a model artifact path: write wandb-artifact://"):
        resolve_bundle("wandb-artifact://just-a-name")
    assert resolve_bundle(Path("some/export")) == Path("some/export")


def test_an_artifact_path_without_wandb_credentials_says_what_to_do(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path))
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    with pytest.raises(BundleError) as err:
        Policy.load("wandb-artifact://my-team/trading-experiments/ppo:best")
    message = str(err.value)
    assert "Could not download the model artifact my-team/trading-experiments/ppo:best" in message
    assert "wandb login" in message and "\n" not in message


@pytest.mark.slow
def test_a_curriculum_phase_logs_its_model_and_uses_the_previous_phases(tmp_path):
    out = tmp_path / "outputs"
    env = {**app_env(), "WANDB_DATA_DIR": str(tmp_path / "wandb-data")}
    done = run_app(
        *RUN[:-3],
        "curriculum=costs_ramp",
        "curriculum.scale=0.001",
        "quiet=true",
        "print_config=false",
        output_root=out,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    by_phase = {}
    for wandb_run in offline_runs(out):
        phase = wandb_run.parent.parent.name  # phases/NN_name/wandb/offline-run-*
        by_phase[phase] = artifacts_of(wandb_run)
    phases = sorted(by_phase)
    assert len(phases) == 3
    logged = {
        p: next(r for r in by_phase[p] if r.type == "model" and not r.use_after_commit)
        for p in phases
    }
    for before, after in zip(phases, phases[1:], strict=False):
        used = [r for r in by_phase[after] if r.type == "model" and r.use_after_commit]
        assert [u.name for u in used] == [logged[before].name]
        assert used[0].digest == logged[before].digest  # the same files: the same version
    assert not [r for r in by_phase[phases[0]] if r.type == "model" and r.use_after_commit]
    assert len({r.name for r in logged.values()}) == 3


def test_the_dataset_artifact_holds_the_bars_only_when_small_or_asked(agent_data, tmp_path):
    assert agent_data.market.num_bars * agent_data.market.num_assets <= BARS_AUTO_ROWS
    name, files, meta = dataset_artifact(agent_data, tmp_path / "auto")
    assert name == f"market-{agent_data.cache_key}" and len(agent_data.cache_key) >= 16
    assert "bars.parquet" in files and meta["bars_included"]
    name, files, meta = dataset_artifact(agent_data, tmp_path / "never", bars=False)
    assert set(files) == {"dataset.json"} and not meta["bars_included"]
    bars = pl.read_parquet(tmp_path / "auto" / "dataset" / "bars.parquet")
    assert bars.height == agent_data.market.num_bars
    assert np.allclose(bars["close"].to_numpy(), agent_data.market.close[:, 0])


def test_a_dataset_bars_setting_that_is_not_one_is_refused():
    with pytest.raises(ConfigError, match="logger.dataset_bars is 'sometimes'"):
        check_job(compose("+model=ppo", "logger.dataset_bars=sometimes"))
