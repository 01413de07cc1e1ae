"""Tests of envs.risk and the risk rules inside the trading env, on crafted price paths."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from helpers.envs import env_cfg, env_factory, make_env
from helpers.markets import BARS, crafted
from hydra.utils import instantiate
from tensordict import TensorDict

from datamodules.errors import ConfigError
from datamodules.market import Market
from envs.actions import TargetActions
from envs.evaluation import evaluate_policy
from envs.risk import RULES, STATE_KEYS, RiskRules, apply_position_limits
from envs.trading import TradingEnv

CAPITAL = 100_000.0
NO_COSTS = {"commission_bps": 0.0, "spread_bps": 0.0, "slippage_bps": 0.0, "impact_coef": 0.0}
FLAT, LONG, SHORT = 0, 1, 2  # single-ticker target actions (levels 0, +1, -1)


def env_for(
    market: Market,
    risk: dict | None = None,
    actions: dict | None = None,
    scheme: str = "targets",
) -> TradingEnv:
    """One env over the whole crafted market, frictionless, float64, from its first bar
    (``scheme``: the env/actions config; ``actions`` and ``risk``: its knobs)."""
    cfg = env_cfg(
        overrides=[f"actions={scheme}"],
        costs=NO_COSTS,
        dtype="float64",
        risk=risk or {},
        actions=actions or {},
        episode={"length": None, "random_start": False},
    )
    return make_env(market, (0, market.num_bars), cfg, num_envs=1)


def run(env: TradingEnv, actions: list[int]) -> list[dict]:
    """Reset, then step through ``actions``; per step the state and the step's outputs."""
    env.reset()
    out = []
    for a in actions:
        td = env.step(TensorDict({"action": torch.tensor([a])}, [1]))["next"]
        out.append(
            {
                **{k: v[0].clone() for k, v in env.state.items() if v.dim() > 0},
                "reward": float(td["reward"][0, 0]),
                "terminated": bool(td["terminated"][0, 0]),
                "truncated": bool(td["truncated"][0, 0]),
                **{k: v[0].clone() for k, v in td["info"].items()},
            }
        )
    return out


def fired(records: list[dict], rule: str) -> list[int]:
    """Steps at which ``rule`` fired."""
    return [i for i, r in enumerate(records) if r["triggers"][RULES.index(rule)] == 1]


def only(records: list[dict], rule: str | None) -> None:
    """No rule but ``rule`` fired on any step."""
    others = [i for i, name in enumerate(RULES) if name != rule]
    for r in records:
        assert (r["triggers"][others] == 0).all(), r["triggers"]


# ------------------------------------------------------------------ config and helpers
@pytest.mark.parametrize(
    "name",
    [
        "max_daily_drawdown",
        "turnover_cap_hour",
        "turnover_cap_session",
        "loss_cut",
        "profit_lock",
        "max_gross_exposure",
        "max_position",
    ],
)
@pytest.mark.parametrize("value", [0.0, -0.5])
def test_limits_must_be_positive_or_null(name, value) -> None:
    with pytest.raises(ConfigError, match=f"env.risk.{name}"):
        RiskRules(**{name: value})
    assert RiskRules(**{name: None}).limit(name) == math.inf
    assert RiskRules(**{name: 0.3}).limit(name) == 0.3


def test_drawdown_penalty_must_not_be_negative() -> None:
    with pytest.raises(ConfigError, match="drawdown_penalty"):
        RiskRules(drawdown_penalty=-1.0)


def test_the_risk_config_builds_the_rules_by_target() -> None:
    cfg = env_cfg()["risk"]
    assert cfg["_target_"] == "envs.risk.RiskRules"
    rules = instantiate(cfg)
    assert rules == RiskRules(max_gross_exposure=1.0, max_position=1.0)
    assert rules.names == RULES
    assert RiskRules.from_config({"loss_cut": 0.1}) == RiskRules(loss_cut=0.1)
    assert RiskRules.from_config(None) == RiskRules() and RiskRules.from_config(rules) is rules
    with pytest.raises(ConfigError, match=r"env\.risk has unknown key\(s\) max_drawdown"):
        RiskRules.from_config({"max_drawdown": 0.1})


def test_rules_state_starts_from_the_capital_and_resets_per_env() -> None:
    rules = RiskRules()
    state = rules.init_state(3, 500.0, "cpu", torch.float64)
    assert list(state) == list(STATE_KEYS)
    assert (state["session_equity"] == 500.0).all() and (state["episode_equity"] == 500.0).all()
    assert state["halted"].dtype == torch.bool and not state["halted"].any()
    changed = {
        "session_equity": torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64),
        "episode_equity": torch.tensor([4.0, 5.0, 6.0], dtype=torch.float64),
        "halted": torch.tensor([True, True, False]),
        "turnover_hour": torch.tensor([0.5, 0.5, 0.5], dtype=torch.float64),
        "turnover_session": torch.tensor([1.5, 1.5, 1.5], dtype=torch.float64),
    }
    fresh = rules.reset(changed, torch.tensor([True, False, False]), 500.0)
    assert fresh["session_equity"].tolist() == [500.0, 2.0, 3.0]
    assert fresh["episode_equity"].tolist() == [500.0, 5.0, 6.0]
    assert fresh["halted"].tolist() == [False, True, False]
    assert fresh["turnover_hour"].tolist() == [0.0, 0.5, 0.5]
    assert fresh["turnover_session"].tolist() == [0.0, 1.5, 1.5]


def test_rules_are_listed_in_trigger_order() -> None:
    assert RULES == (
        "daily_drawdown",
        "turnover_hour",
        "turnover_session",
        "loss_cut",
        "profit_lock",
        "gross_exposure",
        "position_limit",
    )


def test_position_limits_clip_then_scale_the_book() -> None:
    target = torch.tensor([[0.8, -0.9], [0.2, 0.3], [0.6, 0.6]], dtype=torch.float64)
    out, position_hit, gross_hit = apply_position_limits(target, 0.5, 0.8)
    expected = torch.tensor([[0.4, -0.4], [0.2, 0.3], [0.4, 0.4]], dtype=torch.float64)
    torch.testing.assert_close(out, expected)
    assert position_hit.tolist() == [True, False, True]
    assert gross_hit.tolist() == [True, False, True]
    out, position_hit, gross_hit = apply_position_limits(target, math.inf, math.inf)
    assert torch.equal(out, target) and not position_hit.any() and not gross_hit.any()


# ------------------------------------------------------------------ daily drawdown
def _drawdown_path(drop_to: float) -> list[float]:
    session0 = [100.0] * BARS
    session1 = [100.0, 100.0, drop_to, drop_to + 1.0, drop_to + 2.0, 99.5, 100.0, 100.0]
    session2 = [101.0, 102.0, 103.0, 104.0, 105.0, 106.0, 107.0, 108.0]
    return session0 + session1 + session2


def test_daily_drawdown_flattens_for_the_rest_of_the_session() -> None:
    market = crafted(_drawdown_path(96.0))
    env = env_for(market, {"max_daily_drawdown": 0.025, "drawdown_penalty": 5.0})
    records = run(env, [LONG] * (market.num_bars - 1))
    drop = 9  # decided at bar 9, filled at the open of bar 10, which closes 4% lower
    assert fired(records, "daily_drawdown") == [drop]
    only(records, "daily_drawdown")
    hit = records[drop]
    assert float(hit["equity"]) == pytest.approx(96_000.0, abs=1e-9)
    assert float(hit["penalty"][0]) == 5.0
    assert hit["reward"] == pytest.approx(-400.0 - 5.0, abs=1e-3)  # bps of capital - penalty
    assert bool(hit["halted"])
    # Flat from the next open to the end of that session, whatever the agent asks...
    for r in records[drop + 1 : 2 * BARS - 1]:
        assert (r["shares"] == 0).all() and float(r["equity"]) == pytest.approx(96_000.0)
        assert r["penalty"][0] == 0 and r["reward"] == 0.0
    # ... and trading again from the first bar of the next session.
    resumed = records[2 * BARS - 1]
    assert not bool(resumed["halted"]) and (resumed["shares"] > 0).all()
    assert float(resumed["equity"]) == pytest.approx(96_000.0 * 101.0 / 100.0)
    assert env.risk_counts()["daily_drawdown"] == 1


@pytest.mark.parametrize("drop_to, limit", [(98.0, 0.025), (96.0, None)])
def test_daily_drawdown_does_not_fire_otherwise(drop_to, limit) -> None:
    market = crafted(_drawdown_path(drop_to))
    env = env_for(market, {"max_daily_drawdown": limit, "drawdown_penalty": 5.0})
    records = run(env, [LONG] * (market.num_bars - 1))
    only(records, None)
    assert all((r["shares"] > 0).all() for r in records)
    assert all(r["penalty"][0] == 0 for r in records)
    assert sum(env.risk_counts().values()) == 0


def test_daily_drawdown_is_measured_from_the_session_start() -> None:
    # Session 1 ends 3% up; a 4% fall from there inside session 2 is only 1% below the
    # capital but is a 4% daily drawdown.
    path = [100.0] * BARS + [103.0] * BARS + [103.0, 103.0, 98.88, 99.0, 99.0, 99.0, 99.0, 99.0]
    env = env_for(crafted(path), {"max_daily_drawdown": 0.035})
    records = run(env, [LONG] * (len(path) - 1))
    assert fired(records, "daily_drawdown") == [2 * BARS + 1]


# ------------------------------------------------------------------ turnover caps
def _alternating(steps: int) -> list[int]:
    return [LONG if i % 2 == 0 else SHORT for i in range(steps)]


def _hour(market: Market, t: torch.Tensor) -> np.datetime64:
    return market.timestamps[int(t)].astype("datetime64[h]")


def test_hourly_turnover_cap_blocks_trades_over_it() -> None:
    market = crafted([100.0] * (3 * BARS))
    env = env_for(market, {"turnover_cap_hour": 3.0})
    records = run(env, _alternating(market.num_bars - 1))
    blocked = fired(records, "turnover_hour")
    only(records, "turnover_hour")
    # flat -> long (1x), long -> short (2x) fill the 3x cap; short -> long is refused.
    assert blocked[0] == 2
    assert [float(r["turnover"][0]) for r in records[:2]] == pytest.approx([1.0, 2.0])
    prev = None
    for i, r in enumerate(records):
        if i in blocked:
            assert torch.equal(r["shares"], prev) and r["turnover"][0] == 0 and r["fills"][0] == 0
        prev = r["shares"]
    # Never more than 3x equity traded within a clock hour, and trading resumes each hour.
    per_hour: dict = {}
    for r in records:
        hour = _hour(market, r["t"])
        per_hour[hour] = per_hour.get(hour, 0.0) + float(r["turnover"][0])
    assert max(per_hour.values()) <= 3.0 + 1e-9
    assert sum(v > 0 for v in per_hour.values()) == len(per_hour)
    assert env.risk_counts()["turnover_hour"] == len(blocked) > 2


def test_session_turnover_cap_blocks_trades_for_the_rest_of_the_session() -> None:
    market = crafted([100.0] * (3 * BARS))
    env = env_for(market, {"turnover_cap_session": 4.0})
    records = run(env, _alternating(market.num_bars - 1))
    blocked = fired(records, "turnover_session")
    only(records, "turnover_session")
    assert blocked[0] == 2  # 1x + 2x traded, another 2x would make 5x > 4x
    # No trade for the rest of the first session (fill bars 3..7)...
    assert all(r["turnover"][0] == 0 for r in records[2 : BARS - 1])
    # ... and trading again in the next one.
    assert any(r["turnover"][0] > 0 for r in records[BARS - 1 : 2 * BARS - 1])
    per_session: dict = {}
    for r in records:
        s = int(market.session[int(r["t"])])
        per_session[s] = per_session.get(s, 0.0) + float(r["turnover"][0])
    assert max(per_session.values()) <= 4.0 + 1e-9
    assert env.risk_counts()["turnover_session"] == len(blocked)


def test_turnover_caps_do_not_fire_below_them() -> None:
    market = crafted([100.0] * (3 * BARS))
    env = env_for(market, {"turnover_cap_hour": 100.0, "turnover_cap_session": 100.0})
    records = run(env, _alternating(market.num_bars - 1))
    only(records, None)
    assert all(r["turnover"][0] > 0 for r in records)


# ------------------------------------------------------------------ loss cut, profit lock
def _jump(to: float, at: int = 5, bars: int = 3 * BARS) -> list[float]:
    return [100.0] * at + [to] * (bars - at)


@pytest.mark.parametrize(
    "rule, risk, price",
    [("loss_cut", {"loss_cut": 0.05}, 90.0), ("profit_lock", {"profit_lock": 0.05}, 110.0)],
)
def test_loss_cut_and_profit_lock_end_the_episode(rule, risk, price) -> None:
    market = crafted(_jump(price))
    env = env_for(market, risk)
    records = run(env, [LONG] * 5)
    assert fired(records, rule) == [4]  # filled bar 5 moved equity by 10%
    only(records, rule)
    assert [r["terminated"] for r in records] == [False] * 4 + [True]
    assert not records[4]["truncated"]
    # TorchRL stops a rollout there.
    env2 = env_for(market, risk)
    td = env2.rollout(50, lambda td: td.set("action", torch.tensor([LONG])))
    assert td.shape == (1, 5) and bool(td["next", "terminated"][0, -1])
    assert env2.risk_counts()[rule] == 1


@pytest.mark.parametrize(
    "risk, price",
    [({"loss_cut": 0.15}, 90.0), ({"profit_lock": 0.15}, 110.0), ({"loss_cut": None}, 50.0)],
)
def test_loss_cut_and_profit_lock_do_not_fire_otherwise(risk, price) -> None:
    market = crafted(_jump(price))
    env = env_for(market, risk)
    records = run(env, [LONG] * (market.num_bars - 1))
    only(records, None)
    assert not any(r["terminated"] for r in records)
    assert records[-1]["truncated"]


def test_a_finished_episode_restarts_fresh_in_a_rollout() -> None:
    market = crafted(_jump(90.0))
    env = env_for(market, {"loss_cut": 0.05})
    td = env.rollout(
        8, lambda td: td.set("action", torch.tensor([LONG])), break_when_any_done=False
    )
    assert td["next", "terminated"][0, :, 0].tolist() == [False] * 4 + [True] * 1 + [False] * 3
    assert float(td["info", "equity"][0, 5, 0]) == CAPITAL  # the reset's info
    assert float(td["next", "info", "equity"][0, 5, 0]) == CAPITAL  # flat bars 1..5 again


# ------------------------------------------------------------------ position limits
def test_gross_exposure_scales_the_book_down() -> None:
    market = crafted(np.column_stack([np.full(16, 100.0), np.full(16, 50.0)]))
    env = env_for(market, actions={"position_size": 1.0})  # (+1, +1) = 200% gross
    both_long, first_long, long_short = 4, 3, 5  # (+1, +1), (+1, 0), (+1, -1)
    records = run(env, [both_long, both_long, first_long, long_short])
    assert fired(records, "gross_exposure") == [0, 1, 3]
    only(records, "gross_exposure")
    torch.testing.assert_close(records[0]["target"], torch.tensor([0.5, 0.5], dtype=torch.float64))
    torch.testing.assert_close(
        records[0]["shares"], torch.tensor([500.0, 1000.0], dtype=torch.float64)
    )
    assert records[1]["turnover"][0] == 0  # the same scaled book: nothing to trade
    torch.testing.assert_close(records[2]["target"], torch.tensor([1.0, 0.0], dtype=torch.float64))
    torch.testing.assert_close(records[3]["target"], torch.tensor([0.5, -0.5], dtype=torch.float64))
    assert env.risk_counts()["gross_exposure"] == 3


def test_gross_exposure_limit_above_one_allows_leverage() -> None:
    market = crafted(np.column_stack([np.full(16, 100.0), np.full(16, 50.0)]))
    env = env_for(market, {"max_gross_exposure": 1.5}, actions={"position_size": 1.0})
    records = run(env, [4])
    torch.testing.assert_close(
        records[0]["target"], torch.tensor([0.75, 0.75], dtype=torch.float64)
    )


def test_position_limit_clips_sizing_targets() -> None:
    market = crafted([100.0] * 16)
    env = env_for(
        market,
        {"max_position": 1.5, "max_gross_exposure": None},
        actions={"position_size": 1.0, "max_position": 3.0},
        scheme="sizing",
    )
    buy_all, sell_all = 4, 8  # +100% / -100% of capital
    records = run(env, [buy_all, buy_all, buy_all, sell_all])
    assert fired(records, "position_limit") == [1, 2]
    only(records, "position_limit")
    targets = [float(r["target"][0]) for r in records]
    assert targets == pytest.approx([1.0, 1.5, 1.5, 0.5])
    assert float(records[1]["shares"][0]) == pytest.approx(1500.0)
    assert env.risk_counts()["position_limit"] == 2


def test_position_and_gross_limits_fire_together_in_rule_order() -> None:
    market = crafted([100.0] * 16)
    env = env_for(market, {"max_position": 1.5}, actions={"levels": [0.0, 2.0]})
    records = run(env, [1, 0])
    expected = [0.0] * len(RULES)
    expected[RULES.index("gross_exposure")] = expected[RULES.index("position_limit")] = 1.0
    assert records[0]["triggers"].tolist() == expected
    assert float(records[0]["target"][0]) == pytest.approx(1.0)  # 2 -> 1.5 -> scaled to 1
    assert records[1]["triggers"].tolist() == [0.0] * len(RULES)
    counts = env.risk_counts()
    assert list(counts) == list(RULES)
    assert counts == {**dict.fromkeys(RULES, 0), "gross_exposure": 1, "position_limit": 1}


def test_limits_within_bounds_do_not_fire() -> None:
    market = crafted(np.column_stack([np.full(16, 100.0), np.full(16, 50.0)]))
    env = env_for(market, {"max_position": 0.5, "max_gross_exposure": 1.0})
    records = run(env, list(range(9)) + list(range(6)))  # default size 1/2 per ticker
    only(records, None)


# ------------------------------------------------------------------ a rule of one's own
@dataclass(frozen=True)
class TradeBudget(RiskRules):
    """The default rules plus a budget of trades (steps with a fill) per episode: orders
    beyond ``max_trades`` are not made."""

    max_trades: int | None = None

    @property
    def names(self) -> tuple[str, ...]:
        return (*super().names, "trade_budget")

    def init_state(self, num_envs, capital, device, dtype):
        used = torch.zeros(num_envs, dtype=torch.long, device=device)
        return {**super().init_state(num_envs, capital, device, dtype), "trades_used": used}

    def reset(self, state, mask, capital):
        used = state["trades_used"]
        return {**super().reset(state, mask, capital), "trades_used": used.where(~mask, 0)}

    def pre_trade(self, state, target, account, step):
        target, updates, flags = super().pre_trade(state, target, account, step)
        trading = (target != account.target).any(-1)
        over = trading & (state["trades_used"] >= self.limit("max_trades"))
        target = account.target.where(over.unsqueeze(-1), target)
        return target, updates, {**flags, "trade_budget": over}

    def post_trade(self, state, account, bar, step):
        updates, flags, penalty, terminated = super().post_trade(state, account, bar, step)
        used = state["trades_used"] + (bar.fills > 0).long()
        return {**updates, "trades_used": used}, flags, penalty, terminated


def _alternating_policy():
    """A rollout policy: long, short, long, ... by step (whatever the observation)."""
    flips = iter(_alternating(1000))
    return lambda td: td.set("action", torch.tensor([next(flips)]))


def _budget_cfg(length: int | None) -> dict:
    risk = {"_target_": f"{__name__}.TradeBudget", "max_trades": 2}
    episode = {"length": length, "random_start": False}
    return env_cfg(costs=NO_COSTS, dtype="float64", risk=risk, episode=episode)


def test_a_risk_rules_subclass_adds_a_rule_with_its_trigger_and_count() -> None:
    market = crafted([100.0] * (2 * BARS))
    env = make_env(market, (0, market.num_bars), _budget_cfg(5), num_envs=1)
    assert isinstance(env.risk, TradeBudget) and env.risk.max_trades == 2
    assert env.rule_names == (*RULES, "trade_budget") and list(env.risk_counts()) == list(
        env.rule_names
    )
    assert env.observation_spec["info", "triggers"].shape == (1, len(RULES) + 1)
    assert "trades_used" in env.state
    td = env.rollout(10, _alternating_policy(), break_when_any_done=False)
    fills = td["next", "info", "fills"][0, :, 0].tolist()
    assert fills == [1, 1, 0, 0, 0] * 2  # two trades per episode of 5 bars, then blocked
    budget = td["next", "info", "triggers"][0, :, -1].tolist()
    # Refused orders fire (an action equal to the current target is no order).
    assert budget == [False, False, True, False, True] * 2
    assert not td["next", "info", "triggers"][..., :-1].any()  # the default rules stay quiet
    assert env.risk_counts() == {**dict.fromkeys(RULES, 0), "trade_budget": 4}


def test_the_evaluation_counts_a_subclass_rule_by_name() -> None:
    market = crafted([100.0] * (2 * BARS))
    factory = env_factory(market, _budget_cfg(None))
    flip = lambda obs: torch.full((obs.shape[0],), LONG if obs[0, -1] <= 0 else SHORT)  # noqa: E731
    _, counts = evaluate_policy(flip, factory, (0, market.num_bars), paths=2)
    assert counts == {**dict.fromkeys(RULES, 0), "trade_budget": 2 * (market.num_bars - 1 - 2)}


@pytest.mark.slow
def test_a_subclass_rule_runs_in_the_compiled_step() -> None:
    market = crafted([100.0] * (2 * BARS))
    cfg = _budget_cfg(5)
    runs = []
    for compiled in (False, True):
        env = make_env(market, (0, market.num_bars), {**cfg, "compile": compiled}, num_envs=1)
        assert env.compiled == compiled
        td = env.rollout(10, _alternating_policy(), break_when_any_done=False)
        runs.append((td, env.risk_counts()))
    (eager, eager_counts), (fused, fused_counts) = runs
    assert eager_counts == fused_counts and eager_counts["trade_budget"] == 4
    for key in (("next", "info", "triggers"), ("next", "info", "equity"), ("next", "reward")):
        torch.testing.assert_close(eager[key], fused[key], rtol=1e-12, atol=1e-9, msg=str(key))


@dataclass(frozen=True)
class SilentRule(RiskRules):
    """Names a rule but never returns its flag."""

    @property
    def names(self) -> tuple[str, ...]:
        return (*super().names, "silent")


@dataclass(frozen=True)
class GreedyState(RiskRules):
    """Claims an entry of the env's own state."""

    def init_state(self, num_envs, capital, device, dtype):
        cash = torch.zeros(num_envs, dtype=dtype, device=device)
        return {**super().init_state(num_envs, capital, device, dtype), "cash": cash}


def test_a_rule_without_its_flag_or_with_a_taken_state_key_is_refused() -> None:
    market = crafted([100.0] * 16)
    env = TradingEnv(market, (0, 16), actions=TargetActions, risk=SilentRule())
    env.reset()
    with pytest.raises(ValueError, match=r"SilentRule names the rule\(s\) \['silent'\]"):
        env.step(TensorDict({"action": torch.tensor([LONG])}, [1]))
    with pytest.raises(ValueError, match=r"\['cash'\].*GreedyState"):
        TradingEnv(market, (0, 16), actions=TargetActions, risk=GreedyState())
    with pytest.raises(ConfigError, match=r"env\.risk is a str"):
        TradingEnv(market, (0, 16), actions=TargetActions, risk="strict")
