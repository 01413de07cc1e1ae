"""The env's default path: env.compile=auto chooses eager or compiled by the batch and says
so, and the lean ``step_and_maybe_reset`` a collector runs returns what TorchRL's generic path
returns, value for value, resets of finished envs included."""

from __future__ import annotations

import logging
import re

import pytest
import torch
from helpers.envs import ENDING_RULES, checked_factory, env_cfg, make_env
from helpers.markets import synthetic_data
from torchrl.envs import EnvBase

from datamodules.errors import ConfigError
from envs.trading import COMPILE_MIN_ENVS, TradingEnv, compile_choice, vectorize_choice


@pytest.fixture(scope="module")
def pair():
    return synthetic_data(["AAA", "BBB"], sessions=30)


@pytest.fixture(scope="module")
def one():
    return synthetic_data(["AAA"], sessions=30)


def twins(pair, num_envs: int = 16, **sections) -> tuple[TradingEnv, TradingEnv]:
    cfg = env_cfg(
        "dual_ticker",
        risk=ENDING_RULES,
        episode={"length": 20},
        reward={"normalize": True},
        **sections,
    )
    build = lambda: make_env(pair.market, pair.split.train, cfg, num_envs=num_envs, seed=3)  # noqa: E731
    return build(), build()


def lockstep(ours: TradingEnv, theirs: TradingEnv, steps: int) -> int:
    """Step ``ours`` through its own ``step_and_maybe_reset`` and ``theirs`` through TorchRL's
    generic one with the same actions (and a policy output riding along); every entry of both
    returned TensorDicts and every state tensor must be equal. Returns the steps that reset."""
    gen = torch.Generator().manual_seed(0)
    a, b = ours.reset(), theirs.reset()
    resets = 0
    for _ in range(steps):
        action = torch.randint(0, ours.actions.num_actions, (ours.num_envs,), generator=gen)
        logits = torch.randn(ours.num_envs, ours.actions.num_actions, generator=gen)
        for td in (a, b):
            td["action"], td["logits"] = action.clone(), logits.clone()
        out_a, a = ours.step_and_maybe_reset(a)
        out_b, b = EnvBase.step_and_maybe_reset(theirs, b)
        for x, y in ((out_a, out_b), (a, b)):
            assert set(x.keys(True, True)) == set(y.keys(True, True))
            for key in x.keys(True, True):
                assert torch.equal(x[key], y[key]), key
                assert x[key].dtype == y[key].dtype, key
        for key in ours.state:
            assert torch.equal(ours.state[key], theirs.state[key]), key
        resets += int(out_a["next", "done"].any())
    return resets


def test_the_lean_path_returns_torchrls_generic_path_value_for_value(pair) -> None:
    ours, theirs = twins(pair)
    resets = lockstep(ours, theirs, 120)
    assert resets > 30  # partial resets on most steps: the reset branch is exercised
    assert ours.risk_counts() == theirs.risk_counts()
    assert sum(ours.risk_counts().values()) > 0


def test_the_lean_path_carries_the_same_random_episode_starts(pair) -> None:
    ours, theirs = twins(pair, num_envs=64)
    lockstep(ours, theirs, 60)
    assert torch.equal(ours.rng.get_state(), theirs.rng.get_state())
    assert len(ours.state["t"].unique()) > 10


class _OwnStep(TradingEnv):
    """A user's env that overrides ``_step``: it takes TorchRL's generic path."""

    def _step(self, tensordict):
        return super()._step(tensordict)


def own_step_env(pair, cfg: dict, num_envs: int) -> _OwnStep:
    kwargs = {k: v for k, v in cfg.items() if k not in ("_target_", "_partial_", "num_envs")}
    kwargs["tickers"] = list(pair.market.tickers)
    return _OwnStep(pair.market, pair.split.train, num_envs=num_envs, seed=3, **_built(kwargs))


def test_an_env_overriding_step_takes_the_generic_path_with_the_same_rollout(pair) -> None:
    cfg = env_cfg("dual_ticker", risk=ENDING_RULES, episode={"length": 20})
    generic = own_step_env(pair, cfg, num_envs=4)
    lean = make_env(pair.market, pair.split.train, cfg, num_envs=4, seed=3)
    for env in (generic, lean):
        td = env.reset()
        td["action"] = torch.zeros(4, dtype=torch.long)
        assert env._lean_path(td) == (env is lean)
    rollouts = []
    for env in (lean, generic):
        env.set_seed(3)
        torch.manual_seed(1)  # the random actions of rollout()
        rollouts.append(env.rollout(50, break_when_any_done=False))
    mine, theirs = rollouts
    assert bool(mine["next", "done"].any())
    assert set(mine.keys(True, True)) == set(theirs.keys(True, True))
    for key in mine.keys(True, True):
        assert torch.equal(mine[key], theirs[key]), key


def _built(cfg: dict) -> dict:
    """The env's keyword arguments with their plug-ins built, as Hydra builds them."""
    from hydra.utils import instantiate

    return {
        k: instantiate(v) if isinstance(v, dict) and "_target_" in v else v for k, v in cfg.items()
    }


# ------------------------------------------------------------------ env.compile
def test_compile_auto_compiles_from_compile_min_envs_on_a_cpu_and_always_on_a_gpu() -> None:
    assert compile_choice("auto", COMPILE_MIN_ENVS - 1, "cpu", COMPILE_MIN_ENVS)[0] is False
    assert compile_choice("auto", COMPILE_MIN_ENVS, "cpu", COMPILE_MIN_ENVS)[0] is True
    assert compile_choice("auto", 1, torch.device("cuda"), COMPILE_MIN_ENVS)[0] is True
    assert compile_choice(True, 1, "cpu", COMPILE_MIN_ENVS) == (True, "env.compile=true")
    assert compile_choice(False, 10**6, "cuda", COMPILE_MIN_ENVS) == (False, "env.compile=false")
    compiled, why = compile_choice("auto", 4096, "cpu", 512)
    assert compiled and why == "env.compile=auto: 4096 envs >= env.compile_min_envs=512"


def test_compile_vectorize_auto_is_vector_code_for_several_assets_and_scalar_code_for_one() -> None:
    assert vectorize_choice("auto", 2) == (True, "env.compile_vectorize=auto: 2 assets")
    assert vectorize_choice("auto", 8)[0] is True
    assert vectorize_choice("auto", 1) == (False, "env.compile_vectorize=auto: one asset")
    assert vectorize_choice(True, 1) == (True, "env.compile_vectorize=true")
    assert vectorize_choice(False, 8) == (False, "env.compile_vectorize=false")


def test_the_default_config_vectorises_the_compiled_step_of_several_assets_only(pair, one) -> None:
    cfg = env_cfg("single_ticker")
    assert cfg["compile_vectorize"] == "auto"
    single = make_env(one.market, one.split.train, {**cfg, "tickers": ["AAA"]}, num_envs=512)
    double = make_env(pair.market, pair.split.train, env_cfg("dual_ticker"), num_envs=512)
    assert single.compiled and not single.vectorized
    assert single._compiled_step.options == {"cpp.simdlen": 1}  # one SIMD lane: scalar code
    assert double.compiled and double.vectorized and double._compiled_step.options == {}
    # The same setting for the reset and the restart.
    assert single._compiled_reset.options == single._compiled_restart.options == {"cpp.simdlen": 1}


def test_the_default_config_compiles_large_batches_only_and_logs_the_choice(pair, caplog) -> None:
    cfg = env_cfg("dual_ticker")
    assert cfg["compile"] == "auto" and cfg["compile_min_envs"] == COMPILE_MIN_ENVS
    with caplog.at_level(logging.INFO, logger="envs.trading"):
        small = make_env(pair.market, pair.split.train, cfg, num_envs=64)
        large = make_env(pair.market, pair.split.train, cfg, num_envs=COMPILE_MIN_ENVS)
    assert not small.compiled and small._step_fn == small._step_outputs
    assert large.compiled and large._step_fn != large._step_outputs  # compiles at its first step
    assert large.compile_seconds is None
    logged = caplog.text
    assert (
        "env: eager step for 64 env(s) on cpu (env.compile=auto: 64 envs < env.compile_min_envs=512)"
        in logged
    )
    assert f"env: compiled step for {COMPILE_MIN_ENVS} env(s) on cpu" in logged
    evaluation = make_env(
        pair.market, pair.split.train, cfg, num_envs=COMPILE_MIN_ENVS, evaluation=True
    )
    assert (
        not evaluation.compiled
        and evaluation.compile_reason == "the evaluation env is never compiled"
    )


@pytest.mark.parametrize(
    ("section", "match"),
    [
        ({"compile": "sometimes"}, r"env\.compile"),
        ({"compile_min_envs": 0}, r"env\.compile_min_envs"),
        ({"compile_vectorize": "sometimes"}, r"env\.compile_vectorize"),
    ],
)
def test_a_bad_compile_setting_is_a_config_error_naming_the_key(pair, section, match) -> None:
    cfg = {**env_cfg("dual_ticker"), **section, "tickers": list(pair.market.tickers)}
    with pytest.raises(ConfigError, match=match):
        checked_factory(cfg, pair.market)(pair.split.train, num_envs=2)


@pytest.mark.slow
def test_the_compiled_lean_path_matches_the_eager_generic_path_and_logs_its_compile(
    pair, caplog
) -> None:
    cfg = env_cfg(
        "dual_ticker", risk=ENDING_RULES, episode={"length": 20}, dtype="float64", compile=True
    )
    compiled = make_env(pair.market, pair.split.train, cfg, num_envs=8, seed=3)
    eager = make_env(pair.market, pair.split.train, {**cfg, "compile": False}, num_envs=8, seed=3)
    with caplog.at_level(logging.INFO, logger="envs.trading"):
        gen = torch.Generator().manual_seed(0)
        a, b = compiled.reset(), eager.reset()
        for _ in range(60):
            action = torch.randint(0, 9, (8,), generator=gen)
            a["action"], b["action"] = action.clone(), action.clone()
            out_a, a = compiled.step_and_maybe_reset(a)
            out_b, b = EnvBase.step_and_maybe_reset(eager, b)
            for key in out_b.keys(True, True):
                torch.testing.assert_close(out_a[key], out_b[key], rtol=1e-12, atol=1e-9)
    # The three compiles are timed and logged, and compile_seconds is their sum; the restart
    # compiles at the first step, before any env has finished.
    logged = dict(re.findall(r"env: (reset|step|restart) compiled in ([0-9.]+) s", caplog.text))
    assert set(logged) == {"reset", "step", "restart"}
    # Each logged time is rounded to 0.1 s, so their sum is within 0.05 s of the total per compile.
    rounding = 0.05 * len(logged) + 1e-9
    assert compiled.compile_seconds == pytest.approx(sum(map(float, logged.values())), abs=rounding)
    assert f"compiling has taken {compiled.compile_seconds:.1f} s in all" in caplog.text
    assert "fused, vector code: env.compile_vectorize=auto: 2 assets)" in caplog.text


@pytest.mark.slow
def test_a_one_asset_env_compiles_scalar_code_that_matches_the_eager_generic_path(
    one, caplog
) -> None:
    cfg = env_cfg(
        "single_ticker",
        tickers=["AAA"],
        risk=ENDING_RULES,
        episode={"length": 20},
        dtype="float64",
        compile=True,
    )
    with caplog.at_level(logging.INFO, logger="envs.trading"):
        compiled = make_env(one.market, one.split.train, cfg, num_envs=8, seed=3)
        eager = make_env(one.market, one.split.train, {**cfg, "compile": False}, num_envs=8, seed=3)
        vector = make_env(
            one.market, one.split.train, {**cfg, "compile_vectorize": True}, num_envs=8, seed=3
        )
        gen = torch.Generator().manual_seed(0)
        a, b, c = compiled.reset(), eager.reset(), vector.reset()
        resets = 0
        for _ in range(60):
            action = torch.randint(0, 3, (8,), generator=gen)
            a["action"], b["action"], c["action"] = action.clone(), action.clone(), action.clone()
            out_a, a = compiled.step_and_maybe_reset(a)
            out_b, b = EnvBase.step_and_maybe_reset(eager, b)
            out_c, c = vector.step_and_maybe_reset(c)
            for x, y, z in ((out_a, out_b, out_c), (a, b, c)):
                for key in y.keys(True, True):
                    torch.testing.assert_close(x[key], y[key], rtol=1e-12, atol=1e-9)
                    # Scalar code gives vector code's numbers to the bit (one asset: no sum
                    # over assets that the two could round differently).
                    assert torch.equal(x[key], z[key]), key
            resets += int(out_b["next", "done"].any())
    assert resets > 5
    assert vector.vectorized and "at::vec" in vector._compiled_step._compiled.source_code
    assert "at::vec" not in compiled._compiled_step._compiled.source_code
    assert "fused, scalar code: env.compile_vectorize=auto: one asset)" in caplog.text


@pytest.mark.slow
def test_the_compiled_restart_gives_the_compiled_generic_path_bit_for_bit(pair) -> None:
    # The lean path's compiled restart takes every env's next observation from the reset's
    # own: for an env that goes on it is the step's, to the bit.
    ours, theirs = twins(pair, compile=True)
    assert ours.compiled and theirs.compiled
    resets = lockstep(ours, theirs, 60)
    assert resets > 10
    assert ours._restart_fn == ours._compiled_restart  # compiled at the first step
