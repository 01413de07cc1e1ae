"""Distributed training of RL agents: two CPU processes over gloo (hardware=ddp_cpu) keep
identical weights, count frames and episodes over both, keep each process's envs, collector
and replay in the checkpoint, and refuse what they cannot do; the collectives are checked in a
two-process gloo group started in-process."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from helpers.cli import app_env, ctrl_c_once, read_metrics, run_app, run_folders
from helpers.ddp_worker import collectives

from datamodules.errors import ConfigError
from experiments.runtime.hardware import resolve_hardware
from modules.agents.ddp import AgentDDPStrategy, agent_strategy, check_agent_hardware
from modules.collectives import (
    all_gather,
    average_gradients,
    broadcast_tensors,
    gather_to_rank_zero,
    sum_over_ranks,
    weights_digest,
)
from modules.family import StrategyPlan
from modules.hardware import Hardware

# Two processes, 8 envs each, 8 steps per env per iteration: 128 frames per iteration in all.
DDP_TINY = [
    "hardware=ddp_cpu",
    "data.synthetic.sessions=60",
    "env.num_envs=8",
    "++model.collector.frames_per_env=8",
    "++model.eval.every_n_iterations=1",
    "++model.checkpoint.every_n_iterations=1",
    "print_config=false",
    "export.enabled=false",  # export has its own tests (test_export.py)
]
DIGEST = re.compile(r"weights identical on all 2 processes \(digest (\w+)\)")


def _logged_digests(folder: Path) -> dict[str, str]:
    """The weight digest each process logged at the end of fit, by log file."""
    found = {}
    for name in ("train.log", "train_ddp_process_1.log"):
        match = DIGEST.search((folder / name).read_text())
        assert match, f"no digest in {name}"
        found[name] = match.group(1)
    return found


def _checkpoint(folder: Path, name: str = "last.ckpt") -> dict:
    return torch.load(folder / "checkpoints" / name, weights_only=True)


# ------------------------------------------------------------------ PPO, length in frames
@pytest.fixture(scope="module")
def ppo_run(tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    out = tmp_path_factory.mktemp("ppo_ddp")
    done = run_app(
        "+model=ppo",
        "env=dual_ticker",
        *DDP_TINY,
        "++model.collector.total_frames=384",  # 3 iterations of 2 x 64 frames
        output_root=out,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (folder,) = run_folders(out)
    return done, folder


@pytest.mark.slow  # moved out of the default suite (its time); CI runs it
def test_ppo_on_ddp_cpu_keeps_weights_identical_across_ranks(ppo_run):
    done, folder = ppo_run
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in done.stdout + done.stderr
    digests = _logged_digests(folder)
    assert len(set(digests.values())) == 1, digests
    # ... and rank 0's saved weights (after the last iteration) are the ones both logged.
    assert weights_digest(_checkpoint(folder)["state_dict"]) == digests["train.log"]
    metrics = read_metrics(folder)
    assert set(metrics["test"]) == {"strategy", "buy_and_hold", "flat", "random"}
    assert "val/score" in metrics["logged"] and "test/score" in metrics["logged"]
    assert len(list((folder / "wandb").glob("offline-run-*"))) == 1  # rank 0 alone logs


@pytest.mark.slow  # moved out of the default suite (its time); CI runs it
def test_total_frames_are_counted_over_all_ranks(ppo_run):
    _, folder = ppo_run
    checkpoint = _checkpoint(folder)
    assert checkpoint["agent_world_size"] == 2
    ranks = checkpoint["agent_state"]
    assert len(ranks) == 2
    for state in ranks:
        assert state["iteration"] == 3  # 384 frames / (2 processes x 8 envs x 8 frames)
        assert state["frames"] == 384  # summed over processes
        assert state["collector"]["frames"] == 192  # this process's own
    # Each process ran its own envs (seed + rank): different RNG states and positions.
    assert not torch.equal(ranks[0]["env"]["rng"], ranks[1]["env"]["rng"])
    assert not torch.equal(ranks[0]["env"]["t"], ranks[1]["env"]["t"])
    assert "length 384 frames" in (folder / "train.log").read_text()


@pytest.mark.slow  # moved out of the default suite (its time); CI runs it
def test_resume_with_another_world_size_is_refused(ppo_run, tmp_path):
    _, folder = ppo_run
    result = run_app(
        "+model=ppo",
        "env=dual_ticker",
        *[o for o in DDP_TINY if o != "hardware=ddp_cpu"],
        "++model.collector.total_frames=384",
        "quiet=true",
        f"resume={folder}",
        output_root=tmp_path / "outputs",
    )
    assert result.returncode == 2, result.stderr[-3000:]
    assert "2 process(es)" in result.stderr and "hardware=ddp_cpu" in result.stderr
    assert "Traceback" not in result.stderr


# ------------------------------------------------------------------ DQN, length in episodes
@pytest.fixture(scope="module")
def dqn_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dqn_ddp")
    done = run_app(
        "+model=dqn",
        *DDP_TINY,
        "env.episode.length=8",  # an episode per env per iteration
        "++model.collector.total_frames=null",
        "++model.collector.episodes=40",
        "++model.collector.learning_starts=64",
        "++model.replay.batch_size=32",
        "logger=none",
        output_root=out,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (folder,) = run_folders(out)
    return folder


@pytest.mark.slow
def test_dqn_trains_on_ddp_cpu(dqn_run):
    folder = dqn_run
    assert read_metrics(folder)["model"] == "dqn"
    digests = _logged_digests(folder)  # the weights and the target network
    assert len(set(digests.values())) == 1, digests
    assert weights_digest(_checkpoint(folder)["state_dict"]) == digests["train.log"]
    ranks = _checkpoint(folder)["agent_state"]
    # Each process filled its own replay buffer from its own envs and made the same updates.
    replays = [s["extra"]["replay"]["_storage"] for s in ranks]
    assert [r["_len"] for r in replays] == [s["collector"]["frames"] for s in ranks]
    observations = [r["_storage"]["observation"] for r in replays]
    assert not torch.equal(observations[0], observations[1])
    assert ranks[0]["extra"]["updates"] == ranks[1]["extra"]["updates"] > 0


@pytest.mark.slow
def test_episodes_are_counted_over_all_ranks(dqn_run):
    ranks = _checkpoint(dqn_run)["agent_state"]
    completed = [s["episodes"]["completed"] for s in ranks]
    # Both stopped at the same iteration, once the sum reached 40 (neither alone had).
    assert ranks[0]["iteration"] == ranks[1]["iteration"]
    assert sum(completed) >= 40 and max(completed) < 40, completed


# ------------------------------------------------------------------ refusals and the strategy
def _hardware(**hw) -> Hardware:
    """The hardware group (ddp_cpu unless changed) resolved as the run resolves it."""
    base = {
        "accelerator": "cpu",
        "devices": 2,
        "num_nodes": 1,
        "strategy": {
            "_target_": "pytorch_lightning.strategies.DDPStrategy",
            "process_group_backend": "gloo",
            "find_unused_parameters": False,
        },
        "precision": "32-true",
        "num_threads": 1,
    }
    return resolve_hardware({**base, **hw})


@pytest.mark.parametrize(
    "strategy",
    [
        "fsdp",
        "deepspeed_stage_2",
        "ddp_spawn",
        {"_target_": "pytorch_lightning.strategies.FSDPStrategy"},
        {"_target_": "pytorch_lightning.strategies.DDPStrategy", "start_method": "spawn"},
    ],
    ids=["fsdp", "deepspeed", "ddp_spawn", "fsdp_target", "spawn_start"],
)
def test_agents_refuse_strategies_other_than_ddp(strategy):
    with pytest.raises(ConfigError, match=r"hardware\.strategy=.*hardware=ddp_cpu"):
        check_agent_hardware(_hardware(strategy=strategy), 8)


def test_agents_accept_the_ddp_configs_and_build_a_strategy_without_the_wrapper():
    assert check_agent_hardware(_hardware(), 8) == 2
    assert check_agent_hardware(_hardware(strategy="ddp", num_nodes=2), 8) == 4
    assert check_agent_hardware(_hardware(devices=1, strategy="auto"), 8) == 1
    plan = agent_strategy(_hardware(), num_threads=1)
    assert isinstance(plan.strategy, AgentDDPStrategy) and (plan.devices, plan.num_nodes) == (2, 1)
    assert plan.strategy.process_group_backend == "gloo" and plan.strategy.num_threads == 1
    assert agent_strategy(_hardware(devices=1), None) == StrategyPlan("auto", 1, 1)


def test_agents_refuse_other_accelerators_auto_envs_and_missing_gpus(monkeypatch):
    with pytest.raises(ConfigError, match="hardware.accelerator is 'mps'"):
        check_agent_hardware(_hardware(accelerator="mps"), 8)
    with pytest.raises(ConfigError, match="env.num_envs=auto with 2 processes"):
        check_agent_hardware(_hardware(), "auto")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ConfigError, match="hardware.devices=2 asks for GPUs"):
        _hardware(accelerator="gpu", strategy="ddp")


def test_ranks_and_gpus_come_from_lightnings_launcher_or_slurm(monkeypatch):
    for key in ("LOCAL_RANK", "NODE_RANK", "RANK", "SLURM_NTASKS", "TORCHELASTIC_RUN_ID"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)

    def gpus(**hw) -> Hardware:
        return _hardware(accelerator="gpu", strategy="ddp", **hw)

    hw = gpus(devices=-1, num_nodes=2)
    assert hw.world_size == 8
    assert hw.rank == 0 and hw.device == torch.device("cuda", 0)
    # A process Lightning's launcher started: second node, third GPU.
    monkeypatch.setenv("NODE_RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "2")
    hw = gpus(devices=-1, num_nodes=2)
    assert hw.rank == 6 and hw.device == torch.device("cuda", 2)
    # A SLURM task (srun): its ranks come from SLURM.
    monkeypatch.setenv("SLURM_NTASKS", "8")
    monkeypatch.setenv("SLURM_NTASKS_PER_NODE", "4")
    monkeypatch.setenv("SLURM_JOB_NAME", "train")
    monkeypatch.setenv("SLURM_PROCID", "5")
    monkeypatch.setenv("SLURM_LOCALID", "1")
    hw = gpus(devices=-1, num_nodes=2)
    assert hw.rank == 5 and hw.device == torch.device("cuda", 1)
    assert gpus(devices=[1, 3]).device == torch.device("cuda", 3)  # SLURM local rank 1


# ------------------------------------------------------------------ collectives, in-process
def test_gradients_are_averaged_and_weights_broadcast_across_two_processes(tmp_path):
    mp.spawn(collectives, args=(str(tmp_path / "store"), str(tmp_path)), nprocs=2)
    r0, r1 = (torch.load(tmp_path / f"{r}.pt", weights_only=False) for r in (0, 1))
    for r in (r0, r1):
        assert torch.equal(r["a_grad"], torch.full((3, 2), 1.5))  # (1 + 2) / 2
        assert torch.equal(r["b_grad"], torch.arange(4.0).double() * 0.5)
        assert r["unused_grad"] is None
        assert r["sums"] == [3.0, 20.0]
        assert r["all"] == ["r0", "r1"]
    assert not torch.equal(r0["before"], r1["before"])
    assert torch.equal(r0["a"], r1["a"]) and torch.equal(r0["b"], r1["b"])
    assert torch.equal(r1["a"], r0["before"])  # rank 0's values everywhere
    assert [g["rank"] for g in r0["gathered"]] == [0, 1] and r1["gathered"] is None


def test_collectives_are_no_ops_in_one_process():
    p = torch.nn.Parameter(torch.ones(2))
    p.grad = torch.tensor([1.0, 3.0])
    average_gradients([p])
    broadcast_tensors([p.data])
    assert torch.equal(p.grad, torch.tensor([1.0, 3.0])) and torch.equal(p, torch.ones(2))
    assert sum_over_ranks([2, 3], torch.device("cpu")) == [2.0, 3.0]
    assert gather_to_rank_zero("x") == ["x"] and all_gather("x") == ["x"]


# ------------------------------------------------------------------ interrupt and resume (slow)
def _ddp_cmd(out: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "experiments",
        "+model=dqn",
        *DDP_TINY,
        "++model.collector.iterations=60",
        "++model.collector.learning_starts=64",
        "++model.replay.batch_size=32",
        "++model.eval.every_n_iterations=10",
        "++model.checkpoint.every_n_iterations=5",
        "quiet=true",
        "logger=none",
        f"paths.output_root={out}",
        *extra,
    ]


@pytest.mark.slow
def test_ctrl_c_on_one_rank_saves_every_rank_and_resumes_to_the_uninterrupted_result(tmp_path):
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    done = subprocess.run(_ddp_cmd(straight), capture_output=True, text=True, env=app_env())
    assert done.returncode == 0, done.stderr[-3000:]

    # SIGINT reaches rank 0 only: rank 1 must agree to stop, not hang.
    code, err = ctrl_c_once(_ddp_cmd(stopped), stopped, "last.ckpt")
    assert code == 0, err[-3000:]
    assert "Resume with:" in err
    (folder,) = [p.parent.parent for p in stopped.rglob("interrupted.ckpt")]
    checkpoint = _checkpoint(folder, "interrupted.ckpt")
    assert checkpoint["agent_world_size"] == 2
    iterations = [s["iteration"] for s in checkpoint["agent_state"]]
    assert iterations[0] == iterations[1] and 0 < iterations[0] < 60

    resumed = subprocess.run(
        _ddp_cmd(stopped, f"resume={folder}"), capture_output=True, text=True, env=app_env()
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a, b = read_metrics(run_folders(straight)[0]), read_metrics(folder)
    assert a["test"] == b["test"]
    assert a["logged"] == b["logged"]
