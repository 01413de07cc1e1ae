"""Tests of envs.trading: specs, sizes, accounting identities, timing, resets, seeding, state."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.envs import env_cfg, make_env
from helpers.markets import synthetic_data
from tensordict import TensorDict
from torchrl.envs.utils import check_env_specs, step_mdp

from datamodules.errors import ConfigError
from datamodules.market import Market
from datamodules.pipeline import MarketData
from envs.fused import FusedFunction
from envs.risk import RULES
from envs.trading import TradingEnv

CONF = Path(__file__).resolve().parents[1] / "conf" / "env"
CAPITAL = 100_000.0
NO_COSTS = {"commission_bps": 0.0, "spread_bps": 0.0, "slippage_bps": 0.0, "impact_coef": 0.0}
ALL_RULES = {
    "max_daily_drawdown": 0.02,
    "drawdown_penalty": 1.0,
    "turnover_cap_hour": 3.0,
    "turnover_cap_session": 10.0,
    "loss_cut": 0.1,
    "profit_lock": 0.1,
    "max_gross_exposure": 1.0,
    "max_position": 0.5,
}
FIXED_START = {"random_start": False, "length": None}
PER_BAR = ("open", "high", "low", "close", "volume", "sigma", "adv", "features", "time_features")


def build(tickers: int, sessions: int = 60) -> MarketData:
    return synthetic_data([f"T{i:02d}" for i in range(tickers)], sessions=sessions)


@pytest.fixture(scope="module")
def one() -> MarketData:
    return build(1)


@pytest.fixture(scope="module")
def two() -> MarketData:
    return build(2)


@pytest.fixture(scope="module")
def three() -> MarketData:
    return build(3)


def random_actions(env: TradingEnv, steps: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, env.actions.num_actions, (steps, env.num_envs), generator=gen)


def run(env: TradingEnv, actions: torch.Tensor) -> list[dict]:
    """Step ``env`` (``env.step``) with each row of ``actions``; the state and outputs per step."""
    records = []
    for action in actions:
        td = env.step(TensorDict({"action": action.to(env.device)}, env.batch_size))["next"]
        records.append(
            {
                **{k: v.clone() for k, v in env.state.items()},
                "obs": td["observation"],
                "reward": td["reward"].squeeze(-1),
                "terminated": td["terminated"].squeeze(-1),
                "truncated": td["truncated"].squeeze(-1),
                **{f"info_{k}": v for k, v in td["info"].items()},
            }
        )
    return records


def close_at(market: Market, t: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(market.close, dtype=torch.float64)[t]


# ------------------------------------------------------------------ specs and sizes
@pytest.mark.parametrize("num_envs", [1, 8])
@pytest.mark.parametrize("risk", ["defaults", "all_rules"])
@pytest.mark.parametrize("name", ["single_ticker", "dual_ticker", "portfolio"])
def test_check_env_specs_passes(name, risk, num_envs, one, two, three) -> None:
    data = {"single_ticker": one, "dual_ticker": two, "portfolio": three}[name]
    cfg = env_cfg(name, risk=ALL_RULES) if risk == "all_rules" else env_cfg(name)
    env = make_env(data.market, data.split.train, cfg, num_envs=num_envs, seed=1)
    check_env_specs(env)
    td = env.rollout(50, break_when_any_done=False)
    assert td.batch_size == (num_envs, 50)
    assert torch.isfinite(td["next", "reward"]).all()
    assert torch.isfinite(td["next", "observation"]).all()


def test_single_ticker_has_3_actions_and_13_observations(one) -> None:
    env = make_env(one.market, one.split.train, env_cfg(), num_envs=2)
    assert env.action_spec.n == 3
    assert env.observation_spec["observation"].shape == (2, 13)
    assert env.reset()["observation"].shape == (2, 13)


def test_dual_ticker_default_has_9_actions_and_26_observations(two) -> None:
    env = make_env(two.market, two.split.train, env_cfg("dual_ticker"), num_envs=4)
    assert env.action_spec.n == 9
    assert env.observation_spec["observation"].shape == (4, 26)
    assert env.reset()["observation"].shape == (4, 26)


def test_sizing_actions_are_9(two) -> None:
    cfg = env_cfg("dual_ticker", ["actions=sizing"])
    env = make_env(two.market, two.split.train, cfg, num_envs=2)
    assert env.action_spec.n == 9
    assert env.observation_spec["observation"].shape == (2, 26)


@pytest.mark.parametrize("assets", [3, 30])
def test_portfolio_has_12_actions_for_any_number_of_assets(assets) -> None:
    data = build(assets, sessions=10)
    env = make_env(data.market, data.split.train, env_cfg("portfolio"), num_envs=2)
    assert env.action_spec.n == 12
    assert env.observation_spec["observation"].shape == (2, 12 * assets + assets)
    td = env.rollout(10, break_when_any_done=False)
    assert torch.isfinite(td["next", "reward"]).all()


def test_window_and_calendar_widen_the_observation(one) -> None:
    cfg = env_cfg(episode={"window": 3, "calendar": True})
    env = make_env(one.market, one.split.train, cfg, num_envs=2)
    assert env.obs_dim == 3 * 12 + 1 + one.market.time_features.shape[1]
    assert env.reset()["observation"].shape == (2, env.obs_dim)


def test_observation_names_follow_the_observation_columns(two) -> None:
    cfg = env_cfg("dual_ticker", episode={"window": 2, "calendar": True})
    env = make_env(two.market, two.split.train, cfg, num_envs=1)
    names = env.observation_names()
    assert len(names) == env.obs_dim == len(set(names))
    tickers, features = two.market.tickers, two.market.feature_names
    assert names[0] == f"{tickers[0]}.{features[0]}@t-1"
    assert names[len(features)] == f"{tickers[1]}.{features[0]}@t-1"
    held = names.index(f"held.{tickers[0]}")
    assert held == 2 * 2 * len(features) and names[held + 1] == f"held.{tickers[1]}"
    assert names[-1].startswith("calendar.")
    # The column named as bar t's first feature holds that feature at the decision bar.
    obs = env.reset()["observation"][0]
    t = int(env.state["t"][0])
    column = names.index(f"{tickers[1]}.{features[0]}@t-0")
    assert obs[column] == pytest.approx(float(two.market.features[t, 1, 0]))


# ------------------------------------------------------------------ accounting in the env
@pytest.mark.parametrize("name", ["single_ticker", "dual_ticker", "portfolio"])
def test_equity_is_cash_plus_shares_at_close_every_step(name, one, two, three) -> None:
    data = {"single_ticker": one, "dual_ticker": two, "portfolio": three}[name]
    env = make_env(data.market, data.split.train, env_cfg(name, dtype="float64"), num_envs=4)
    env.reset()
    for rec in run(env, random_actions(env, 120, seed=3)):
        close = close_at(data.market, rec["t"])
        marked = rec["cash"] + (rec["shares"] * close).sum(-1)
        torch.testing.assert_close(rec["equity"], marked, rtol=1e-12, atol=1e-9)
        torch.testing.assert_close(rec["mark"], close)
        torch.testing.assert_close(rec["info_equity"].squeeze(-1), rec["equity"].float())


def test_advance_and_transition_step_like_env_step(two) -> None:
    cfg = env_cfg("dual_ticker", dtype="float64", risk=ALL_RULES)
    envs = [make_env(two.market, two.split.train, cfg, num_envs=4, seed=3) for _ in range(3)]
    for env in envs:
        env.reset()
    actions = random_actions(envs[0], 30, seed=2)
    stepped = run(envs[0], actions)
    for i, action in enumerate(actions):
        reward, info, terminated, truncated = envs[1].advance(action)
        state, obs, reward2, info2, _, _ = envs[2].transition(envs[2].state, action)
        envs[2].state = state
        torch.testing.assert_close(reward, stepped[i]["reward"], rtol=0, atol=0)
        torch.testing.assert_close(reward2, reward, rtol=0, atol=0)
        torch.testing.assert_close(obs, stepped[i]["obs"], rtol=0, atol=0)
        torch.testing.assert_close(info["triggers"], stepped[i]["info_triggers"])
        assert torch.equal(terminated, stepped[i]["terminated"])
        assert torch.equal(truncated, stepped[i]["truncated"])
        for key, value in envs[1].state.items():
            assert torch.equal(value, stepped[i][key]) and torch.equal(value, envs[2].state[key])


def test_costs_only_on_steps_where_the_position_changes(one) -> None:
    env = make_env(one.market, one.split.train, env_cfg(dtype="float64"), num_envs=6)
    env.reset()
    gen = torch.Generator().manual_seed(4)
    actions = torch.randint(0, 3, (150, 6), generator=gen)
    repeat = torch.rand((150, 6), generator=gen) < 0.6
    for i in range(1, 150):
        actions[i] = torch.where(repeat[i], actions[i - 1], actions[i])
    level = torch.tensor([0.0, 1.0, -1.0])[actions]
    before = torch.cat([torch.zeros(1, 6), level[:-1]])
    changed = level != before
    records = run(env, actions)
    cost = torch.stack([r["info_cost"].squeeze(-1) for r in records])
    fills = torch.stack([r["info_fills"].squeeze(-1) for r in records])
    turnover = torch.stack([r["info_turnover"].squeeze(-1) for r in records])
    assert changed.any() and (~changed).any()
    assert (cost[changed] > 0).all() and (cost[~changed] == 0).all()
    assert (fills[changed] == 1).all() and (fills[~changed] == 0).all()
    assert (turnover[~changed] == 0).all()


def test_repeating_an_action_pays_costs_only_on_the_first_step(two) -> None:
    env = make_env(two.market, two.split.train, env_cfg("dual_ticker", dtype="float64"), 3)
    env.reset()
    records = run(env, torch.full((20, 3), 5))  # (+1, -1) per ticker, held
    cost = torch.stack([r["info_cost"].squeeze(-1) for r in records])
    shares = torch.stack([r["shares"] for r in records])
    assert (cost[0] > 0).all() and (cost[1:] == 0).all()
    assert (shares == shares[0]).all()
    assert (shares[0, :, 0] > 0).all() and (shares[0, :, 1] < 0).all()


@pytest.mark.parametrize("name", ["single_ticker", "dual_ticker"])
def test_a_flat_policy_earns_and_pays_nothing(name, one, two) -> None:
    data = one if name == "single_ticker" else two
    env = make_env(data.market, data.split.train, env_cfg(name, dtype="float64"), num_envs=4)
    env.reset()
    for rec in run(env, torch.zeros((100, 4), dtype=torch.long)):
        assert (rec["equity"] == CAPITAL).all() and (rec["cash"] == CAPITAL).all()
        assert (rec["reward"] == 0).all()
        for key in ("info_pnl", "info_cost", "info_turnover", "info_fills"):
            assert (rec[key] == 0).all(), key


def test_always_long_reproduces_buy_and_hold(one) -> None:
    cfg = env_cfg(costs=NO_COSTS, dtype="float64", episode=FIXED_START)
    env = make_env(one.market, one.split.train, cfg, num_envs=2)
    env.reset()
    first_fill = env.first + 1
    close = one.market.close[:, 0]
    entry = one.market.open[first_fill, 0]
    records = run(env, torch.ones((env.length, 2), dtype=torch.long))
    assert env.length == one.split.train[1] - 1 - env.first
    for i, rec in enumerate(records):
        expected = CAPITAL * close[first_fill + i] / entry
        assert (rec["t"] == first_fill + i).all()
        torch.testing.assert_close(
            rec["equity"], torch.full((2,), expected, dtype=torch.float64), rtol=0, atol=1e-9
        )
    assert records[-1]["truncated"].all()


# ------------------------------------------------------------------ timing
def _perturbed_after(market: Market, row: int, seed: int) -> Market:
    """The market with every per-bar array after ``row`` scaled by random factors."""
    rng = np.random.default_rng(seed)
    changes = {}
    for name in PER_BAR:
        values = getattr(market, name).copy()
        values[row + 1 :] *= rng.uniform(0.5, 1.5, values[row + 1 :].shape).astype(values.dtype)
        changes[name] = values
    return dataclasses.replace(market, **changes)


@pytest.mark.parametrize("name", ["single_ticker", "portfolio"])
def test_no_look_ahead_steps_up_to_t_ignore_later_bars(name, one, three) -> None:
    data = one if name == "single_ticker" else three
    cfg = env_cfg(name, dtype="float64", episode={**FIXED_START, "window": 3, "calendar": True})
    span = data.split.train
    row = 300
    later = _perturbed_after(data.market, row, seed=5)
    envs = [make_env(m, span, cfg, num_envs=3) for m in (data.market, later)]
    actions = random_actions(envs[0], 400, seed=6)
    obs0 = [env.reset()["observation"] for env in envs]
    torch.testing.assert_close(obs0[0], obs0[1], rtol=0, atol=0)
    a, b = (run(env, actions) for env in envs)
    known = [i for i, rec in enumerate(a) if int(rec["t"][0]) <= row]
    assert len(known) == row - envs[0].first
    for i in known:
        for key in ("obs", "reward", "cash", "shares", "equity", "info_cost"):
            torch.testing.assert_close(a[i][key], b[i][key], rtol=0, atol=0, msg=key)
    # ... and the perturbation does change the steps after t.
    after = known[-1] + 1
    assert not torch.equal(a[after]["equity"], b[after]["equity"])
    assert not torch.equal(a[after]["obs"], b[after]["obs"])


@pytest.mark.parametrize("name", ["single_ticker", "portfolio"])
def test_a_fill_uses_only_its_open_and_what_was_known_at_the_decision(name, one, three) -> None:
    data = one if name == "single_ticker" else three
    cfg = env_cfg(name, dtype="float64", episode={**FIXED_START, "window": 2})
    fill = 300
    # Everything of bars >= fill changes except the open the order is filled at.
    later = _perturbed_after(data.market, fill - 1, seed=7)
    open_ = later.open.copy()
    open_[fill] = data.market.open[fill]
    later = dataclasses.replace(later, open=open_)
    envs = [make_env(m, data.split.train, cfg, num_envs=3) for m in (data.market, later)]
    actions = random_actions(envs[0], fill - envs[0].first, seed=16)
    actions[-1] = (actions[-2] + 1) % envs[0].actions.num_actions  # a new order at that open
    for env in envs:
        env.reset()
    a, b = (run(env, actions) for env in envs)
    last = a[-1]
    assert (last["t"] == fill).all()
    for key in ("shares", "cash", "target", "info_cost", "info_turnover", "info_fills"):
        torch.testing.assert_close(last[key], b[-1][key], rtol=0, atol=0, msg=key)
    assert (last["info_cost"] > 0).all()
    # ... while the mark at the close of the fill bar does see the new close.
    assert not torch.equal(last["equity"], b[-1]["equity"])


def test_observation_shows_the_close_of_bar_t_and_the_weights_held(one) -> None:
    cfg = env_cfg(dtype="float64", episode=FIXED_START)
    env = make_env(one.market, one.split.train, cfg, num_envs=1)
    obs = env.reset()["observation"]
    feats = torch.as_tensor(one.market.features[env.first].reshape(-1))
    torch.testing.assert_close(obs[0, :-1], feats)
    assert obs[0, -1] == 0
    td = env.step(TensorDict({"action": torch.tensor([1])}, batch_size=[1]))
    t = env.first + 1
    weight = env.state["shares"] * one.market.close[t, 0] / env.state["equity"].unsqueeze(-1)
    torch.testing.assert_close(
        td["next", "observation"][0, :-1], torch.as_tensor(one.market.features[t].reshape(-1))
    )
    torch.testing.assert_close(td["next", "observation"][0, -1:], weight[0].float())
    # Filled at the open of t, marked at its close.
    shares = CAPITAL / one.market.open[t, 0]
    assert abs(float(env.state["shares"][0, 0]) - shares) / shares < 1e-3  # costs shave a bit


# ------------------------------------------------------------------ resets
def test_partial_reset_leaves_the_other_envs_untouched(two) -> None:
    dsr = ["reward=differential_sharpe", "~reward.weights"]
    cfg = env_cfg("dual_ticker", dsr, dtype="float64", risk=ALL_RULES, reward={"scale": 1.0})
    env = make_env(two.market, two.split.train, cfg, num_envs=8, seed=2)
    env.reset()
    run(env, random_actions(env, 40, seed=7))
    current = step_mdp(env.step(TensorDict({"action": torch.arange(8)}, [8])))
    before = {k: v.clone() for k, v in env.state.items()}
    assert (before["sharpe_b"] != 0).all() and (before["steps"] > 0).all()
    obs_before = current["observation"].clone()
    mask = torch.tensor([True, False, False, True, False, True, False, False])
    current["_reset"] = mask.unsqueeze(-1)
    td = env.reset(current)
    keep = ~mask
    per_env = {k for k, v in env.state.items() if v.dim() > 0 and v.shape[0] == env.num_envs}
    for key, value in env.state.items():
        if key not in per_env:  # batch-wide: reward variance, trigger totals
            assert torch.equal(value, before[key]), key
        else:
            assert torch.equal(value[keep], before[key][keep]), key
    assert torch.equal(td["observation"][keep], obs_before[keep])
    # The reset envs start fresh.
    state = {k: v[mask] for k, v in env.state.items() if k in per_env}
    assert (state["cash"] == CAPITAL).all() and (state["equity"] == CAPITAL).all()
    assert (state["shares"] == 0).all() and (state["target"] == 0).all()
    assert (state["steps"] == 0).all() and not state["halted"].any()
    assert (state["session_equity"] == CAPITAL).all()
    assert (state["episode_equity"] == CAPITAL).all()
    assert (state["turnover_hour"] == 0).all() and (state["turnover_session"] == 0).all()
    assert (state["sharpe_a"] == 0).all() and (state["sharpe_b"] == 0).all()
    t = state["t"]
    assert ((t >= env.first) & (t <= env.stop - 1 - env.length)).all()
    feats = torch.as_tensor(two.market.features[t.numpy()].reshape(len(t), -1))
    torch.testing.assert_close(td["observation"][mask], torch.cat([feats, torch.zeros(3, 2)], -1))
    assert not td["done"].any()
    # Untouched envs go on from where they were.
    rec = run(env, torch.full((1, 8), 4))[0]
    assert (rec["steps"][keep] == before["steps"][keep] + 1).all()
    assert (rec["steps"][mask] == 1).all()


def test_rollout_resets_only_finished_envs(one) -> None:
    cfg = env_cfg(dtype="float64", episode={"length": 7})
    env = make_env(one.market, one.split.train, cfg, num_envs=4, seed=3)
    gen = torch.Generator().manual_seed(0)

    def policy(td):
        td["action"] = torch.randint(0, 3, (4,), generator=gen)
        return td

    td = env.rollout(30, policy, break_when_any_done=False)
    truncated = td["next", "truncated"].squeeze(-1)
    assert truncated[:, 6::7].all() and truncated.sum() == 4 * 4
    steps_equity = td["next", "info", "equity"].squeeze(-1)
    # The step after a truncation starts a fresh episode from the capital.
    assert torch.allclose(td["info", "equity"][:, 7::7].squeeze(-1), torch.tensor(CAPITAL))
    assert torch.isfinite(steps_equity).all()


# ------------------------------------------------------------------ seeding and episodes
def _rollout(market: MarketData, seed: int) -> TensorDict:
    cfg = env_cfg("dual_ticker", episode={"length": 20})
    env = make_env(market.market, market.split.train, cfg, num_envs=5, seed=seed)
    gen = torch.Generator().manual_seed(11)

    def policy(td):
        td["action"] = torch.randint(0, 9, (5,), generator=gen)
        return td

    return env.rollout(50, policy, break_when_any_done=False)


def test_same_seed_gives_identical_rollouts(two) -> None:
    a, b = _rollout(two, seed=4), _rollout(two, seed=4)
    assert (a == b).all()


def test_different_seeds_give_different_episode_starts(two) -> None:
    cfg = env_cfg("dual_ticker")
    starts = []
    for seed in (1, 2):
        env = make_env(two.market, two.split.train, cfg, num_envs=16, seed=seed)
        env.reset()
        starts.append(env.state["t"].clone())
    assert not torch.equal(starts[0], starts[1])
    a, b = _rollout(two, seed=1), _rollout(two, seed=2)
    assert not torch.equal(a["observation"], b["observation"])


def test_set_seed_reseeds_the_episode_starts(one) -> None:
    env = make_env(one.market, one.split.train, env_cfg(), num_envs=16, seed=0)
    env.set_seed(9)
    env.reset()
    first = env.state["t"].clone()
    env.reset()
    assert not torch.equal(first, env.state["t"])
    env.set_seed(9)
    env.reset()
    assert torch.equal(first, env.state["t"])


def test_truncation_at_the_episode_length(one) -> None:
    env = make_env(one.market, one.split.train, env_cfg(episode={"length": 12}), num_envs=6)
    env.reset()
    start = env.state["t"].clone()
    records = run(env, random_actions(env, 12, seed=8))
    for i, rec in enumerate(records):
        assert (rec["truncated"] == (i == 11)).all()
        assert not rec["terminated"].any()
        assert (rec["steps"] == i + 1).all() and torch.equal(rec["t"], start + i + 1)


def test_truncation_at_the_end_of_the_split(one) -> None:
    span = (500, 520)
    cfg = env_cfg(episode={"length": 1000, "random_start": True})
    env = make_env(one.market, span, cfg, num_envs=3)
    assert env.length == span[1] - 1 - span[0]
    env.reset()
    assert (env.state["t"] == span[0]).all()  # no room for a random start
    records = run(env, random_actions(env, env.length, seed=9))
    assert [bool(r["truncated"].all()) for r in records] == [False] * (env.length - 1) + [True]
    assert (records[-1]["t"] == span[1] - 1).all()


def test_random_starts_stay_inside_the_split(one) -> None:
    span = one.split.val
    env = make_env(one.market, span, env_cfg(episode={"length": 50}), num_envs=64, seed=5)
    starts = []
    for _ in range(10):
        env.reset()
        starts.append(env.state["t"].clone())
    starts = torch.cat(starts)
    assert starts.min() >= span[0] and starts.max() <= span[1] - 1 - 50
    assert len(starts.unique()) > 20
    # Running every episode to its end never reads a bar outside the split.
    records = run(env, random_actions(env, 50, seed=10))
    assert records[-1]["truncated"].all()
    assert (records[-1]["t"] <= span[1] - 1).all()


def test_episodes_over_several_spans_never_cross_a_gap(one) -> None:
    spans = ((40, 160), (300, 420), (600, 700))
    cfg = env_cfg(episode={"length": 30, "random_start": True})
    env = make_env(one.market, spans, cfg, num_envs=64, seed=3)
    inside = torch.zeros(one.market.num_bars, dtype=torch.bool)
    for a, b in spans:
        inside[a:b] = True
    starts = []
    for episode in range(4):
        env.reset()
        start = env.state["t"].clone()
        starts.append(start)
        records = run(env, random_actions(env, 30, seed=20 + episode))
        for i, rec in enumerate(records):
            # Every bar stepped onto is one of the spans' and follows the last bar stepped.
            assert inside[rec["t"]].all()
            assert torch.equal(rec["t"], start + i + 1)
        assert records[-1]["truncated"].all()
    starts = torch.cat(starts)
    # Starts come from every span, each leaving room for a full episode inside it.
    for a, b in spans:
        mine = starts[(starts >= a) & (starts < b)]
        assert mine.numel() > 0 and mine.max() <= b - 1 - 30
    assert inside[starts].all()


def test_a_short_span_truncates_at_its_own_end(one) -> None:
    spans = ((40, 60), (300, 420))
    cfg = env_cfg(episode={**FIXED_START})
    env = make_env(one.market, spans, cfg, num_envs=2)
    env.reset()
    assert env.state["t"].tolist() == [40, 300]  # without random starts the spans take turns
    records = run(env, torch.zeros((19, 2), dtype=torch.long))
    assert records[-1]["truncated"].tolist() == [True, False]
    assert int(records[-1]["t"][0]) == 59


def test_overlapping_spans_are_refused(one) -> None:
    with pytest.raises(ConfigError, match="do not overlap"):
        make_env(one.market, ((40, 160), (150, 300)), env_cfg(), num_envs=1)


def test_window_moves_the_first_bar(one) -> None:
    cfg = env_cfg(episode={**FIXED_START, "window": 8})
    env = make_env(one.market, (0, 200), cfg, num_envs=1)
    assert env.first == 7
    env.reset()
    assert int(env.state["t"][0]) == 7


# ------------------------------------------------------------------ state round trip
def test_state_tensors_round_trip_continues_identically(two) -> None:
    cfg = env_cfg("dual_ticker", risk=ALL_RULES, reward={"normalize": True})
    env = make_env(two.market, two.split.train, cfg, num_envs=4, seed=6)
    env.reset()
    run(env, random_actions(env, 15, seed=12))
    saved = env.state_tensors()
    later = random_actions(env, 20, seed=13)

    def continue_from(target: TradingEnv) -> tuple[list[dict], TensorDict]:
        records = run(target, later)
        td = target.reset(TensorDict({"_reset": torch.ones(4, 1, dtype=torch.bool)}, [4]))
        return records, td

    first, first_reset = continue_from(env)
    env.load_state_tensors(saved)
    again, again_reset = continue_from(env)
    fresh = make_env(two.market, two.split.train, cfg, num_envs=4, seed=99)
    fresh.load_state_tensors(saved)
    other, other_reset = continue_from(fresh)
    for x, y, z in zip(first, again, other, strict=True):
        for key in x:
            assert torch.equal(x[key], y[key]), key
            assert torch.equal(x[key], z[key]), key
    assert (first_reset == again_reset).all() and (first_reset == other_reset).all()
    assert set(saved) == {*env.state, "rng"}


def test_risk_counts_name_every_rule(one) -> None:
    env = make_env(one.market, one.split.train, env_cfg(), num_envs=2)
    assert list(env.risk_counts()) == list(RULES) == list(env.rule_names)
    assert all(v == 0 for v in env.risk_counts().values())


# ------------------------------------------------------------------ devices and compile
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_rollout_matches_cpu(two) -> None:
    cfg = env_cfg("dual_ticker", dtype="float64", risk=ALL_RULES, episode=FIXED_START)
    envs = {
        d: make_env(two.market, two.split.train, cfg, num_envs=8, device=d) for d in ("cpu", "cuda")
    }
    actions = random_actions(envs["cpu"], 200, seed=14)
    out = {}
    for device, env in envs.items():
        env.reset()
        out[device] = run(env, actions)
        assert env.state["cash"].device.type == device
    for a, b in zip(out["cpu"], out["cuda"], strict=True):
        for key in ("cash", "shares", "equity", "reward", "obs", "info_triggers"):
            torch.testing.assert_close(a[key], b[key].cpu(), msg=key)
    td = envs["cuda"].rollout(20, break_when_any_done=False)
    assert td.device.type == "cuda"


@pytest.mark.slow
def test_compiled_step_matches_eager(one) -> None:
    cfg = env_cfg(dtype="float64", risk=ALL_RULES, episode={"length": 100})
    eager = make_env(one.market, one.split.train, cfg, num_envs=4, seed=3)
    compiled = make_env(one.market, one.split.train, {**cfg, "compile": True}, num_envs=4, seed=3)
    assert compiled.compiled and compiled._step_fn is not compiled._step_outputs
    assert not eager.compiled and eager._step_fn == eager._step_outputs
    assert isinstance(compiled._compiled_step, FusedFunction)  # on a CPU: traced once, fused
    actions = random_actions(eager, 60, seed=15)
    mask = TensorDict({"_reset": torch.tensor([[True], [False], [True], [False]])}, [4])
    results = []
    for env in (eager, compiled):
        env.reset()
        records = run(env, actions[:30])
        env.reset(mask.clone())  # a partial reset through the compiled reset
        results.append(records + run(env, actions[30:]))
    for a, b in zip(*results, strict=True):
        for key in ("t", "cash", "shares", "equity", "reward", "obs", "info_triggers", "truncated"):
            torch.testing.assert_close(a[key], b[key], rtol=1e-12, atol=1e-9, msg=key)
    assert compiled._compiled_step.path == "fused" and compiled._compiled_reset.path == "fused"


@pytest.mark.slow
def test_costs_set_after_the_step_compiled_are_the_costs_of_the_next_steps(one) -> None:
    cfg = env_cfg(dtype="float64", risk=ALL_RULES, episode=FIXED_START)
    eager = make_env(one.market, one.split.train, cfg, num_envs=4, seed=3)
    compiled = make_env(one.market, one.split.train, {**cfg, "compile": True}, num_envs=4, seed=3)
    actions = random_actions(eager, 20, seed=16)
    results = []
    for env in (eager, compiled):
        env.reset()
        records = run(env, actions[:10])
        env.frictions = dataclasses.replace(env.frictions, scale=0.0)  # costs off from here on
        results.append(records + run(env, actions[10:]))
    for a, b in zip(*results, strict=True):
        for key in ("cash", "equity", "reward", "info_cost"):
            torch.testing.assert_close(a[key], b[key], rtol=1e-12, atol=1e-9, msg=key)
    assert all(float(r["info_cost"].abs().max()) == 0.0 for r in results[1][10:])
    assert any(float(r["info_cost"].abs().max()) > 0.0 for r in results[1][:10])


# ------------------------------------------------------------------ state and info layout
def test_state_holds_the_account_the_risk_rules_and_the_reward_entries(two) -> None:
    env = make_env(two.market, two.split.train, env_cfg("dual_ticker", risk=ALL_RULES), 2)
    account = ["cash", "shares", "target", "equity", "mark", "t", "steps"]
    rules = ["session_equity", "episode_equity", "halted", "turnover_hour", "turnover_session"]
    assert list(env.state) == [*account, *rules, "reward_var", "trigger_counts"]
    dsr = env_cfg("dual_ticker", ["reward=differential_sharpe", "~reward.weights"])
    env = make_env(two.market, two.split.train, dsr, 2)
    assert list(env.state) == [
        *account,
        *rules,
        "sharpe_a",
        "sharpe_b",
        "reward_var",
        "trigger_counts",
    ]
    td = env.rollout(3, break_when_any_done=False)
    assert env.info_keys == ("pnl", "cost", "penalty", "equity", "turnover", "fills")
    assert set(td["next", "info"].keys()) == {*env.info_keys, "triggers"}
    assert td["next", "info", "triggers"].shape == (2, 3, len(env.rule_names))


def test_state_of_an_env_with_other_plug_ins_is_refused(two) -> None:
    dsr = env_cfg("dual_ticker", ["reward=differential_sharpe", "~reward.weights"])
    sharpe = make_env(two.market, two.split.train, dsr, 2)
    pnl = make_env(two.market, two.split.train, env_cfg("dual_ticker"), 2)
    with pytest.raises(ValueError, match="lacks sharpe_a, sharpe_b"):
        sharpe.load_state_tensors(pnl.state_tensors())
    pnl.load_state_tensors(sharpe.state_tensors())  # extra entries are carried, unused
    pnl.rollout(3, break_when_any_done=False)


def test_state_of_an_env_of_another_dtype_is_refused(two) -> None:
    single = make_env(two.market, two.split.train, env_cfg("dual_ticker"), 2)
    double = make_env(two.market, two.split.train, env_cfg("dual_ticker", dtype="float64"), 2)
    with pytest.raises(ValueError, match="'cash' is torch.float64 .* this env's is torch.float32"):
        single.load_state_tensors(double.state_tensors())
