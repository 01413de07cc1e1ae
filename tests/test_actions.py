"""Tests of envs.actions: target tables, sizing steps and the 12 portfolio factor actions."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import pytest
import torch
from helpers.envs import ENV_CONF, env_cfg, make_env
from helpers.markets import crafted, synthetic_data
from hydra import compose, initialize_config_dir
from hydra.errors import MissingConfigException
from hydra.utils import instantiate
from tensordict import TensorDict

from datamodules.errors import ConfigError
from datamodules.market import Market
from envs.actions import (
    FACTOR_ACTIONS,
    FACTORS,
    ActionScheme,
    FactorActions,
    SizingActions,
    TargetActions,
    factor_scores,
)
from envs.protocol import ActionSchemeLike

F64 = torch.float64


def flat(assets: int) -> Market:
    """A crafted market of ``assets`` tickers (X0, X1, ...) at a constant price."""
    return crafted(np.full((16, assets), 100.0))


@pytest.fixture(scope="module")
def wide() -> Market:
    """30 synthetic tickers, 10 sessions of 15-minute bars."""
    return synthetic_data([f"S{i:02d}" for i in range(30)], sessions=10, seed=3).market


def no_op(n: int, assets: int) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.zeros((n, assets), dtype=F64), torch.zeros(n, dtype=torch.long)


# ------------------------------------------------------------------ targets
def test_target_action_meanings_name_only_the_tickers_held() -> None:
    one, two = TargetActions(flat(1)), TargetActions(flat(2))
    assert one.keys(["NVDA"]) == ["", "NVDA=+1", "NVDA=-1"]
    keys = two.keys(["NVDA", "MSFT"])
    assert len(keys) == 9 and set(one.keys(["NVDA"])) <= set(keys)
    assert keys[one.neutral] == "" and two.neutral == 0


def test_sizing_and_factor_actions_have_hold_as_their_neutral_action(wide) -> None:
    assert (
        SizingActions(flat(2)).neutral == 0 and SizingActions(flat(2)).keys(["A", "B"])[0] == "hold"
    )
    assert FactorActions(wide).neutral == 0


def test_target_levels_without_flat_have_no_neutral_action() -> None:
    assert TargetActions(flat(1), levels=(1.0, -1.0)).neutral is None


def test_single_ticker_targets_are_flat_long_short() -> None:
    actions = TargetActions(flat(1)).to("cpu", F64)
    assert actions.num_actions == 3
    assert actions.table() == {0: [0.0], 1: [1.0], 2: [-1.0]}
    assert actions.names == ["+0", "+1", "-1"]


def test_dual_ticker_targets_are_every_pair_at_half_equity() -> None:
    actions = TargetActions(flat(2)).to("cpu", F64)
    assert actions.num_actions == 9
    levels = [0.0, 1.0, -1.0]
    for i, first in enumerate(levels):
        for j, second in enumerate(levels):
            assert actions.table()[3 * i + j] == [first / 2, second / 2]
    current, t = no_op(4, 2)
    out = actions.targets(torch.tensor([0, 4, 5, 8]), current, t)
    expected = torch.tensor([[0, 0], [0.5, 0.5], [0.5, -0.5], [-0.5, -0.5]], dtype=F64)
    torch.testing.assert_close(out, expected)


def test_target_levels_and_position_size_are_configurable() -> None:
    actions = TargetActions(flat(2), levels=(0.0, 2.0), position_size=0.25).to("cpu", F64)
    assert actions.num_actions == 4
    assert actions.table()[3] == [0.5, 0.5]
    with pytest.raises(ConfigError, match="levels"):
        TargetActions(flat(1), levels=())


def test_targets_follow_the_device_and_dtype() -> None:
    actions = TargetActions(flat(3)).to("cpu", torch.float32)
    current, t = no_op(2, 3)
    assert actions.targets(torch.tensor([0, 13]), current.float(), t).dtype == torch.float32
    assert actions.num_actions == 27


# ------------------------------------------------------------------ sizing
def test_sizing_has_hold_and_four_buy_and_sell_steps() -> None:
    actions = SizingActions(flat(1)).to("cpu", F64)
    assert actions.num_actions == 9
    assert actions.names == [
        "hold",
        "buy 25%",
        "buy 50%",
        "buy 75%",
        "buy 100%",
        "sell 25%",
        "sell 50%",
        "sell 75%",
        "sell 100%",
    ]
    current = torch.full((9, 1), 0.25, dtype=F64)
    out = actions.targets(torch.arange(9), current, torch.zeros(9, dtype=torch.long))
    expected = [0.25, 0.5, 0.75, 1.0, 1.0, 0.0, -0.25, -0.5, -0.75]  # capped at +-1
    torch.testing.assert_close(out.squeeze(-1), torch.tensor(expected, dtype=F64))


def test_sizing_moves_every_ticker_within_the_limit() -> None:
    actions = SizingActions(flat(2), max_position=1.0).to("cpu", F64)  # 1/2 of equity per ticker
    current = torch.tensor([[0.4, -0.4], [0.0, 0.1]], dtype=F64)
    out = actions.targets(torch.tensor([2, 8]), current, torch.zeros(2, dtype=torch.long))
    expected = torch.tensor([[0.5, -0.15], [-0.5, -0.4]], dtype=F64)
    torch.testing.assert_close(out, expected)
    wider = SizingActions(flat(1), position_size=1.0, max_position=3.0).to("cpu", F64)
    t = torch.zeros(1, dtype=torch.long)
    assert float(wider.targets(torch.tensor([4]), torch.tensor([[2.5]], dtype=F64), t)) == 3.0


# ------------------------------------------------------------------ factors
@pytest.mark.parametrize("assets", [3, 30])
def test_portfolio_has_the_same_12_actions_for_any_number_of_assets(
    synthetic, wide, assets
) -> None:
    market = synthetic if assets == 3 else wide
    actions = FactorActions(market).to("cpu", F64)
    assert actions.num_actions == 12 == len(actions.table())
    assert actions.names[:5] == [
        "hold",
        "full cash",
        "defensive 50% cash",
        "light cash 25%",
        "equal weight",
    ]
    n = 12 * 5
    rng = np.random.default_rng(0)
    t = torch.as_tensor(rng.integers(40, market.num_bars, n))
    action = torch.arange(12).repeat(5)
    current = torch.full((n, assets), 0.01, dtype=F64)
    out = actions.targets(action, current, t)
    assert out.shape == (n, assets) and (out >= 0).all()  # long only, the rest in cash
    invested = [share for _, _, share in FACTOR_ACTIONS]  # None: hold
    for row, a in enumerate(action.tolist()):
        if invested[a] is None:
            torch.testing.assert_close(out[row], current[row])  # hold: keep the targets
        else:
            assert float(out[row].sum()) == pytest.approx(invested[a])
    equal = out[action == FactorActions(market).names.index("equal weight")]
    torch.testing.assert_close(equal, torch.full_like(equal, 1.0 / assets))


def test_factor_tilts_follow_the_documented_formula(synthetic) -> None:
    lookback, strength, cap = 10, 2.0, 2.5
    actions = FactorActions(synthetic, lookback, strength, cap).to("cpu", F64)
    scores = factor_scores(synthetic, lookback)
    t = 500
    for a, (name, factor, share) in enumerate(FACTOR_ACTIONS):
        if factor is None:
            continue
        z = scores[t, FACTORS.index(factor)]
        w = np.clip(1.0 + strength * z, 0.0, cap)
        expected = w / w.sum() * share
        out = actions.targets(torch.tensor([a]), torch.zeros((1, 3), dtype=F64), torch.tensor([t]))
        np.testing.assert_allclose(out[0].numpy(), expected, rtol=1e-12, err_msg=name)
    # The momentum tilt holds most of the asset with the best trailing return.
    close = synthetic.close
    best = int(np.argmax(np.log(close[t] / close[t - lookback])))
    momentum = FactorActions(synthetic, lookback).to("cpu", F64)
    out = momentum.targets(
        torch.tensor([momentum.names.index("momentum tilt")]),
        torch.zeros((1, 3), dtype=F64),
        torch.tensor([t]),
    )
    assert int(out[0].argmax()) == best


def test_factor_scores_are_cross_sectional_zscores_known_at_each_bar(synthetic) -> None:
    lookback = 20
    scores = factor_scores(synthetic, lookback)
    assert scores.shape == (synthetic.num_bars, len(FACTORS), 3)
    assert (scores[:lookback] == 0).all()
    assert (scores[:, FACTORS.index("equal")] == 0).all()
    np.testing.assert_allclose(scores[lookback:].mean(-1), 0.0, atol=1e-9)
    # Bars after t do not change the scores at t.
    t = 700
    cut = factor_scores(synthetic.slice(0, t + 1), lookback)
    np.testing.assert_allclose(cut, scores[: t + 1], rtol=1e-9, atol=1e-9)
    later = dataclasses.replace(
        synthetic,
        close=synthetic.close * np.where(np.arange(synthetic.num_bars) > t, 2.0, 1.0)[:, None],
    )
    np.testing.assert_allclose(factor_scores(later, lookback)[: t + 1], scores[: t + 1])
    # Momentum ranks the assets by their trailing log return.
    trailing = np.log(synthetic.close[t] / synthetic.close[t - lookback])
    momentum = scores[t, FACTORS.index("momentum")]
    assert (np.argsort(momentum) == np.argsort(trailing)).all()
    assert (
        np.argsort(scores[t, FACTORS.index("low_volatility")])
        == np.argsort(-scores[t, FACTORS.index("high_volatility")])
    ).all()


# ------------------------------------------------------------------ validation
@pytest.mark.parametrize(
    "build, key",
    [
        (lambda m: TargetActions(m, position_size=0.0), "env.actions.position_size"),
        (lambda m: SizingActions(m, steps=()), "env.actions.steps"),
        (lambda m: SizingActions(m, steps=(0.5, -0.5)), "env.actions.steps"),
        (lambda m: SizingActions(m, max_position=0.0), "env.actions.max_position"),
        (lambda m: SizingActions(m, position_size=-1.0), "env.actions.position_size"),
        (lambda m: FactorActions(m, lookback=0), "env.actions.lookback"),
        (lambda m: FactorActions(m, lookback=2.5), "env.actions.lookback"),
        (lambda m: FactorActions(m, tilt_strength=-1.0), "env.actions.tilt_strength"),
        (lambda m: FactorActions(m, max_multiple=0.0), "env.actions.max_multiple"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_bad_scheme_knobs_raise_a_config_error_naming_the_key(synthetic, build, key) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        build(synthetic)


def test_to_returns_a_moved_copy_and_keeps_the_original(synthetic) -> None:
    factors = FactorActions(synthetic)
    moved = factors.to("cpu", torch.float32)
    assert moved is not factors and moved._scores.dtype == torch.float32
    assert factors._scores.dtype == F64  # the configured scheme can serve another env
    assert moved._factor.dtype == torch.long and moved._hold.dtype == torch.bool


# ------------------------------------------------------------------ the config group
def test_each_action_config_builds_its_scheme_by_target(synthetic) -> None:
    built = {}
    for name, cls in (
        ("targets", TargetActions),
        ("sizing", SizingActions),
        ("factors", FactorActions),
    ):
        make = instantiate(env_cfg(overrides=[f"actions={name}"])["actions"])
        built[name] = make(synthetic)  # a _partial_: the env passes its market
        assert type(built[name]) is cls and isinstance(built[name], ActionSchemeLike)
    assert [built[n].num_actions for n in ("targets", "sizing", "factors")] == [27, 9, 12]
    sizing = instantiate(
        env_cfg(overrides=["actions=sizing", "actions.steps=[0.5,1.0]"])["actions"]
    )
    assert isinstance(sizing(synthetic), SizingActions) and sizing(synthetic).num_actions == 5
    factors = instantiate(env_cfg(overrides=["actions=factors", "actions.lookback=5"])["actions"])
    assert isinstance(factors(synthetic), FactorActions) and factors(synthetic).num_actions == 12
    torch.testing.assert_close(
        factors(synthetic)._scores, torch.from_numpy(factor_scores(synthetic, 5))
    )


def test_an_unknown_scheme_names_the_available_ones() -> None:
    with (
        initialize_config_dir(config_dir=str(ENV_CONF), version_base=None),
        pytest.raises(MissingConfigException, match=r"actions/options") as error,
    ):
        compose("single_ticker", overrides=["actions=options"])
    assert all(name in str(error.value) for name in ("factors", "sizing", "targets"))


# ------------------------------------------------------------------ a scheme of one's own
class Ladder(ActionScheme):
    """A user's scheme: flat, or long ``rungs`` equal steps up to ``top`` of equity in every
    ticker (so 1 + rungs actions)."""

    def __init__(self, market: Market, rungs: int = 2, top: float = 1.0) -> None:
        levels = [top * (i + 1) / rungs / market.num_assets for i in range(rungs)]
        self._levels = torch.tensor([0.0, *levels], dtype=F64)
        self._assets = market.num_assets
        self.num_actions = rungs + 1
        self.names = ["flat", *[f"long {v:g}" for v in levels]]

    def targets(self, action, current, t):
        return self._levels[action].unsqueeze(-1).expand(-1, self._assets)

    def table(self) -> dict[int, list[float] | str]:
        return {i: [float(v)] * self._assets for i, v in enumerate(self._levels)}

    def keys(self, tickers: Sequence[str]) -> list[str]:
        return self.names

    @property
    def neutral(self) -> int:
        return 0


def test_a_user_scheme_selected_by_target_trades_in_the_env(synthetic) -> None:
    scheme = {"_target_": f"{__name__}.Ladder", "_partial_": True, "rungs": 4, "top": 0.8}
    cfg = env_cfg(dtype="float64", costs={"scale": 0.0})
    cfg["actions"] = scheme  # in place of the targets scheme
    env = make_env(synthetic, (0, 200), cfg, num_envs=2)
    assert isinstance(env.actions, Ladder) and env.actions._levels.dtype == F64
    assert env.action_spec.n == 5 and env.action_meanings()[0] == "flat"
    env.reset()
    td = env.step(TensorDict({"action": torch.tensor([0, 4])}, [2]))
    assert td["next", "info", "fills"][:, 0].tolist() == [0.0, 3.0]
    torch.testing.assert_close(env.state["target"][1], torch.full((3,), 0.8 / 3, dtype=F64))
    assert (env.state["target"][0] == 0).all()
