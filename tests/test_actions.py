"""Tests of envs.actions: target tables, sizing steps and the 12 portfolio factor actions."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from datamodules.errors import ConfigError
from datamodules.market import Market
from datamodules.pipeline import build_market_data
from envs.actions import (
    FACTOR_ACTIONS,
    FACTORS,
    FactorActions,
    SizingActions,
    TargetActions,
    factor_scores,
    make_actions,
)

F64 = torch.float64


@pytest.fixture(scope="module")
def wide() -> Market:
    """30 synthetic tickers, 10 sessions of 15-minute bars."""
    return build_market_data(
        source="synthetic",
        tickers=[f"S{i:02d}" for i in range(30)],
        bar_size="15min",
        seed=3,
        window=4,
        cache_dir=None,
        synthetic={"sessions": 10},
    ).market


def no_op(n: int, assets: int) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.zeros((n, assets), dtype=F64), torch.zeros(n, dtype=torch.long)


# ------------------------------------------------------------------ targets
def test_target_action_meanings_name_only_the_tickers_held() -> None:
    one, two = TargetActions(1), TargetActions(2)
    assert one.keys(["NVDA"]) == ["", "NVDA=+1", "NVDA=-1"]
    keys = two.keys(["NVDA", "MSFT"])
    assert len(keys) == 9 and set(one.keys(["NVDA"])) <= set(keys)
    assert keys[one.neutral] == "" and two.neutral == 0


def test_sizing_and_factor_actions_have_hold_as_their_neutral_action(wide) -> None:
    assert SizingActions(2).neutral == 0 and SizingActions(2).keys(["A", "B"])[0] == "hold"
    assert FactorActions(wide).neutral == 0


def test_target_levels_without_flat_have_no_neutral_action() -> None:
    assert TargetActions(1, levels=(1.0, -1.0)).neutral is None


def test_single_ticker_targets_are_flat_long_short() -> None:
    actions = TargetActions(1).to("cpu", F64)
    assert actions.num_actions == 3
    assert actions.table() == {0: [0.0], 1: [1.0], 2: [-1.0]}
    assert actions.names == ["+0", "+1", "-1"]


def test_dual_ticker_targets_are_every_pair_at_half_equity() -> None:
    actions = TargetActions(2).to("cpu", F64)
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
    actions = TargetActions(2, levels=(0.0, 2.0), position_size=0.25).to("cpu", F64)
    assert actions.num_actions == 4
    assert actions.table()[3] == [0.5, 0.5]
    with pytest.raises(ConfigError, match="levels"):
        TargetActions(1, levels=())


def test_targets_follow_the_device_and_dtype() -> None:
    actions = TargetActions(3).to("cpu", torch.float32)
    current, t = no_op(2, 3)
    assert actions.targets(torch.tensor([0, 13]), current.float(), t).dtype == torch.float32
    assert actions.num_actions == 27


# ------------------------------------------------------------------ sizing
def test_sizing_has_hold_and_four_buy_and_sell_steps() -> None:
    actions = SizingActions(1).to("cpu", F64)
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
    actions = SizingActions(2, max_position=1.0).to("cpu", F64)  # 1/2 of equity per ticker
    current = torch.tensor([[0.4, -0.4], [0.0, 0.1]], dtype=F64)
    out = actions.targets(torch.tensor([2, 8]), current, torch.zeros(2, dtype=torch.long))
    expected = torch.tensor([[0.5, -0.15], [-0.5, -0.4]], dtype=F64)
    torch.testing.assert_close(out, expected)
    wider = SizingActions(1, position_size=1.0, max_position=3.0).to("cpu", F64)
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


# ------------------------------------------------------------------ make_actions
def test_make_actions_builds_each_kind(synthetic) -> None:
    assert isinstance(make_actions("targets", synthetic), TargetActions)
    sizing = make_actions("sizing", synthetic, sizing_steps=[0.5, 1.0])
    assert isinstance(sizing, SizingActions) and sizing.num_actions == 5
    factors = make_actions("factors", synthetic, lookback=5, levels=[0, 1])
    assert isinstance(factors, FactorActions) and factors.num_actions == 12
    with pytest.raises(ConfigError, match="env.actions.kind"):
        make_actions("options", synthetic)
