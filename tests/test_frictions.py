"""Tests of envs.frictions: each cost component, its units, and the config checks."""

from __future__ import annotations

import math

import pytest
import torch
from helpers.envs import env_cfg, env_config

from datamodules.errors import ConfigError
from envs.frictions import BPS, Frictions

ATOL = 1e-9
COMPONENTS = ("commission", "spread", "slippage", "impact")
KNOBS = ("commission_bps", "spread_bps", "slippage_bps", "impact_coef")
OFF = {knob: 0.0 for knob in KNOBS}


def _t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def _costs(
    frictions: Frictions,
    shares: float,
    price: float = 100.0,
    sigma: float = 0.02,
    adv: float = 1_000_000.0,
) -> dict[str, float]:
    out = frictions.costs(_t(shares), _t(price), _t(sigma), _t(adv))
    return {name: float(value.item()) for name, value in out.items()}


def test_costs_returns_every_component_in_the_shape_of_the_trade() -> None:
    shares = torch.tensor([[100.0, -50.0, 0.0], [1.0, 2.0, 3.0]], dtype=torch.float64)
    price = _t(10.0, 20.0, 30.0)
    out = Frictions().costs(shares, price, _t(0.01, 0.02, 0.03), _t(1e5, 1e5, 1e5))
    assert set(out) == set(COMPONENTS)
    for value in out.values():
        assert value.shape == shares.shape
        assert value.dtype == torch.float64


@pytest.mark.parametrize("knob,component", list(zip(KNOBS, COMPONENTS, strict=True)))
def test_each_component_is_zero_when_its_knob_is_zero(knob: str, component: str) -> None:
    others_on = Frictions(**{**dict.fromkeys(KNOBS, 5.0), knob: 0.0})
    costs = _costs(others_on, shares=10_000.0)
    assert costs[component] == 0.0
    for name in COMPONENTS:
        if name != component:
            assert costs[name] > 0.0, f"{name} should be on"


def test_all_knobs_off_costs_nothing() -> None:
    costs = _costs(Frictions(**OFF), shares=123_456.0, price=77.0, sigma=0.05, adv=10.0)
    assert all(value == 0.0 for value in costs.values())
    assert Frictions(**OFF).linear_fraction == 0.0


def test_commission_is_bps_of_notional() -> None:
    # 100 shares at 100 = 10_000 notional; 1 bp of it is 1.0.
    costs = _costs(Frictions(**{**OFF, "commission_bps": 1.0}), shares=100.0, price=100.0)
    assert costs["commission"] == pytest.approx(1.0, abs=ATOL)
    costs = _costs(Frictions(**{**OFF, "commission_bps": 2.5}), shares=100.0, price=100.0)
    assert costs["commission"] == pytest.approx(2.5, abs=ATOL)


def test_spread_pays_half_the_quoted_spread() -> None:
    # A 2 bp quoted spread costs 1 bp of the 10_000 notional: 1.0, not 2.0.
    costs = _costs(Frictions(**{**OFF, "spread_bps": 2.0}), shares=100.0, price=100.0)
    assert costs["spread"] == pytest.approx(1.0, abs=ATOL)


def test_slippage_is_bps_of_notional() -> None:
    costs = _costs(Frictions(**{**OFF, "slippage_bps": 3.0}), shares=100.0, price=100.0)
    assert costs["slippage"] == pytest.approx(3.0, abs=ATOL)


def test_linear_fraction_is_commission_plus_half_spread_plus_slippage() -> None:
    f = Frictions(commission_bps=1.0, spread_bps=4.0, slippage_bps=3.0, impact_coef=0.0)
    assert f.linear_fraction == pytest.approx(6.0 * BPS, abs=1e-15)
    costs = _costs(f, shares=100.0, price=100.0)
    linear = costs["commission"] + costs["spread"] + costs["slippage"]
    assert linear == pytest.approx(10_000.0 * f.linear_fraction, abs=ATOL)


def test_costs_are_the_same_for_a_buy_and_a_sell() -> None:
    f = Frictions(commission_bps=1.0, spread_bps=2.0, slippage_bps=1.0, impact_coef=0.3)
    buy = _costs(f, shares=2_500.0)
    sell = _costs(f, shares=-2_500.0)
    for name in COMPONENTS:
        assert buy[name] > 0.0
        assert sell[name] == pytest.approx(buy[name], abs=ATOL)


def test_impact_follows_the_square_root_law() -> None:
    # Y * sigma * sqrt(q / adv) of the notional: 0.1 * 0.02 * sqrt(10_000 / 1_000_000) = 2e-4,
    # on 10_000 shares at 50 (500_000 notional) that is 100.0.
    f = Frictions(**{**OFF, "impact_coef": 0.1})
    costs = _costs(f, shares=10_000.0, price=50.0, sigma=0.02, adv=1_000_000.0)
    assert costs["impact"] == pytest.approx(100.0, abs=ATOL)


def test_impact_fraction_grows_with_the_square_root_of_size() -> None:
    f = Frictions(**{**OFF, "impact_coef": 0.1})
    price = 50.0
    sizes = [1_000.0, 4_000.0, 16_000.0, 64_000.0]
    fractions = [_costs(f, q, price=price)["impact"] / (q * price) for q in sizes]
    for small, big in zip(fractions, fractions[1:], strict=False):
        # Four times the size: twice the cost per unit of notional (8x the currency cost).
        assert big / small == pytest.approx(2.0, rel=1e-12)
    assert fractions[0] == pytest.approx(0.1 * 0.02 * math.sqrt(1_000.0 / 1e6), rel=1e-12)


def test_impact_scales_with_volatility_and_inverse_sqrt_of_volume() -> None:
    f = Frictions(**{**OFF, "impact_coef": 0.1})
    base = _costs(f, 5_000.0, sigma=0.01, adv=1e6)["impact"]
    assert _costs(f, 5_000.0, sigma=0.03, adv=1e6)["impact"] == pytest.approx(3 * base, rel=1e-12)
    assert _costs(f, 5_000.0, sigma=0.01, adv=4e6)["impact"] == pytest.approx(base / 2, rel=1e-12)


def test_impact_is_zero_without_a_trade() -> None:
    f = Frictions(commission_bps=1.0, spread_bps=2.0, slippage_bps=1.0, impact_coef=1.0)
    costs = _costs(f, shares=0.0, price=100.0, sigma=0.05, adv=1_000.0)
    assert all(value == 0.0 for value in costs.values())


def test_impact_is_finite_when_volume_estimate_is_zero() -> None:
    # Warm-up bars can carry adv == 0; the cost must stay finite (adv is floored at 1 share).
    f = Frictions(**{**OFF, "impact_coef": 0.1})
    costs = _costs(f, shares=100.0, price=10.0, sigma=0.01, adv=0.0)
    assert math.isfinite(costs["impact"])
    assert costs["impact"] == pytest.approx(1_000.0 * 0.1 * 0.01 * math.sqrt(100.0), rel=1e-12)


@pytest.mark.parametrize("knob", KNOBS)
@pytest.mark.parametrize("bad", [-1.0, -1e-12, float("nan")])
def test_bad_knob_raises_config_error_naming_the_key(knob: str, bad: float) -> None:
    with pytest.raises(ConfigError, match=rf"env\.costs\.{knob}\b"):
        Frictions(**{knob: bad})


def test_frictions_are_immutable() -> None:
    f = Frictions()
    with pytest.raises(AttributeError):
        f.commission_bps = 5.0  # type: ignore[misc]


@pytest.mark.parametrize("scale", [0.0, 0.5, 2.0])
def test_scale_multiplies_every_cost_component(scale: float) -> None:
    full = _costs(Frictions(), 2_000.0)
    scaled = _costs(Frictions(scale=scale), 2_000.0)
    for name in COMPONENTS:
        assert scaled[name] == pytest.approx(scale * full[name], abs=ATOL)
    assert Frictions(scale=scale).linear_fraction == pytest.approx(
        scale * Frictions().linear_fraction
    )


def test_a_negative_scale_is_refused() -> None:
    with pytest.raises(ConfigError, match="env.costs.scale"):
        Frictions(scale=-0.5)


# ------------------------------------------------------------------ from config
def test_from_config_builds_frictions_from_the_env_costs() -> None:
    assert Frictions.from_config(env_cfg()["costs"]) == Frictions()  # the conf's are the defaults
    assert Frictions.from_config(env_config().costs) == Frictions()  # an OmegaConf node too
    assert Frictions.from_config(None) == Frictions()
    half = Frictions(scale=0.5)
    assert Frictions.from_config(half) is half
    assert Frictions.from_config({"scale": 0.5, "spread_bps": 0.0}) == Frictions(
        scale=0.5, spread_bps=0.0
    )


def test_from_config_names_unknown_keys_and_bad_values() -> None:
    with pytest.raises(ConfigError, match=r"env\.costs has unknown key\(s\) fee_bps"):
        Frictions.from_config({"fee_bps": 1.0})
    with pytest.raises(ConfigError, match=r"backtest\.costs has unknown key\(s\) fee_bps"):
        Frictions.from_config({"fee_bps": 1.0}, key="backtest.costs")
    with pytest.raises(ConfigError, match=r"env\.costs\.scale is -1"):
        Frictions.from_config({"scale": -1.0})
    with pytest.raises(ConfigError, match=r"env\.costs must be a mapping"):
        Frictions.from_config([1.0, 2.0])
