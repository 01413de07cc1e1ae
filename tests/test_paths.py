"""The one next-free-name rule (experiments/runtime/paths.py): nothing is overwritten."""

from __future__ import annotations

from experiments.runtime.paths import next_free


def test_a_free_path_is_kept_and_a_taken_one_numbered(tmp_path):
    run = tmp_path / "10-15-30_run,lr=0.001"
    assert next_free(run) == run
    run.mkdir()
    assert next_free(run).name == "10-15-30_run,lr=0.001-1"  # the dot is not a suffix
    (tmp_path / "10-15-30_run,lr=0.001-1").mkdir()
    assert next_free(run).name == "10-15-30_run,lr=0.001-2"


def test_files_are_numbered_before_their_suffix(tmp_path):
    ckpt = tmp_path / "interrupted.ckpt"
    ckpt.write_text("saved")
    assert next_free(ckpt, keep_suffix=True).name == "interrupted-1.ckpt"
    assert ckpt.read_text() == "saved"
