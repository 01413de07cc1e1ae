"""Config fuzzing: every leaf knob of the composed presets (conf/experiment/*, and each model
with each env) perturbed (a wrong type, negative, zero, NaN, a huge number, an empty list)
either passes the config check or is refused with one paragraph naming the key; never
another exception (a traceback), never a hang. In-process through the checker (fast), then a
handful through the real command line."""

from __future__ import annotations

import copy
import math
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import warm
from helpers.cli import app_env
from helpers.configs import compose
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from omegaconf import DictConfig, ListConfig, OmegaConf

from datamodules.errors import UserInputError
from experiments.config.groups import CONF_DIR
from experiments.config.job import check_job

EXPERIMENTS = sorted(p.stem for p in (Path(CONF_DIR) / "experiment").glob("*.yaml"))
MODELS = ("lstm", "transformer", "ppo", "dqn")
ENVS = ("single_ticker", "dual_ticker", "portfolio")
PRESETS = [(f"+experiment={e}",) for e in EXPERIMENTS] + [
    (f"+model={m}", f"env={e}") for m in MODELS for e in ENVS
]
SKIP = ("hydra.",)  # Hydra's own settings are not the run's config
EXAMPLES = 600


def leaves(node, prefix: str = ""):
    """(dotted key, value) of every leaf (a scalar or a list) of a composed config."""
    for key in node:
        path = f"{prefix}{key}"
        if path.startswith(SKIP) or OmegaConf.is_missing(node, key):
            continue
        child = node._get_node(key)
        if isinstance(child, DictConfig):
            yield from leaves(node[key], f"{path}.")
        elif isinstance(child, ListConfig):
            yield path, list(child)
        else:
            yield path, child._value()


@dataclass(frozen=True)
class Preset:
    """A composed preset: its config, its knobs (dotted key, value) and its leaves before
    interpolation (``data.tickers`` is ``${env.tickers}``), which :func:`related` reads."""

    cfg: DictConfig
    knobs: list[tuple[str, object]]
    raw: dict[str, object]


@pytest.fixture(scope="module")
def composed() -> dict[tuple[str, ...], Preset]:
    out = {}
    for preset in PRESETS:
        cfg = compose(*preset)
        check_job(cfg)  # every preset passes as shipped
        # _target_, _partial_, _convert_ choose plug-ins rather than tune them (their typos
        # are tests/test_config_check.py's); the rest are the knobs.
        knobs = [(k, v) for k, v in leaves(cfg) if not k.rpartition(".")[2].startswith("_")]
        raw = dict(leaves(OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))))
        out[preset] = Preset(cfg, knobs, raw)
    return out


def related(flat: dict[str, object], key: str) -> set[str]:
    """``key`` and the keys it is an interpolation of or that interpolate it, in a preset's
    leaves before interpolation ``flat`` (``data.tickers`` is ``${env.tickers}``: a message
    may name either)."""
    out = {key}
    for other, value in flat.items():
        if value == f"${{{key}}}":
            out.add(other)
        if other == key and isinstance(value, str) and value.startswith("${"):
            out.add(value[2:-1])
    return out


def perturbations(value: object) -> list[object]:
    """Wrong type, negative, zero, NaN, huge, empty list: what fits the leaf's value."""
    if isinstance(value, bool):
        return ["abc", 2, [], None]
    if isinstance(value, (int, float)):
        wrong = [1.5] if isinstance(value, int) else []
        return ["abc", -1, 0, math.nan, 1e308, -1e308, [], *wrong]
    if isinstance(value, list):
        return [[], "abc", [math.nan], [-1], [0], 5]
    if isinstance(value, str):
        return [5, "", [], -1.0]
    return ["abc", -1, 0, math.nan, 1e308, []]  # None: an optional knob


TRIED: set[tuple] = set()


def names_the_key(message: str, key: str) -> bool:
    """The message names the key: in full, by its last two parts (a nested plug-in's own
    check: ``costs.commission_bps``), or by its name beside its parent's path
    (``model.network.recurrent_size and recurrent_layers``)."""
    parent, _, name = key.rpartition(".")
    return (
        key in message
        or ".".join(key.split(".")[-2:]) in message
        or (bool(parent) and f"{parent}." in message and name in message)
    )


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    phases=[Phase.generate],
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_every_perturbed_knob_passes_or_is_one_paragraph_naming_it(composed, data):
    preset = data.draw(st.sampled_from(PRESETS), label="preset")
    cfg, knobs = composed[preset].cfg, composed[preset].knobs
    key, value = data.draw(st.sampled_from(knobs), label="knob")
    bad = data.draw(st.sampled_from(perturbations(value)), label="value")
    TRIED.add((preset, key, repr(bad)))
    perturbed = copy.deepcopy(cfg)
    OmegaConf.update(perturbed, key, bad, force_add=True, merge=False)
    try:
        check_job(perturbed)
    except UserInputError as err:
        message = str(err).strip()
        assert "\n" not in message, message
        named = any(names_the_key(message, k) for k in related(composed[preset].raw, key))
        assert named, f"{key}={bad!r}: {message}"


def test_at_least_500_distinct_perturbations_were_tried():
    assert len(TRIED) >= 500, len(TRIED)
    assert {p for p, _, _ in TRIED} == set(PRESETS)


CLI = [
    ("+model=ppo", "env.num_envs=nan"),
    ("+experiment=nvda_dqn", "data.window=-1"),
    ("+model=lstm", "model.optimizer.lr=abc"),
    ("+model=dqn", "data.features.ema_spans=[]"),
    ("+experiment=portfolio_ppo", "env.capital=1e308"),
]


@pytest.mark.parametrize("args", CLI, ids=[a[-1] for a in CLI])
def test_a_handful_through_the_command_line_exit_2_with_one_paragraph(args, tmp_path):
    done = warm.run(
        [sys.executable, "-m", "experiments", *args, f"paths.output_root={tmp_path}"],
        timeout=120,
        env=app_env(),
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr + done.stdout
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert args[-1].split("=")[0] in lines[0]
