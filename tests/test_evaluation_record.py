"""evaluate_policy's record, built once over the whole pass, against a step-by-step reference:
the record the loop used to keep as it stepped (an ended episode stays flat in cash)."""

from __future__ import annotations

import pytest
import torch
from helpers.envs import ENDING_RULES, env_factory
from helpers.markets import synthetic_data

from envs.evaluation import evaluate_policy


@pytest.fixture(scope="module")
def pair():
    return synthetic_data(["AAA", "BBB"], sessions=40)


def stepped(policy, make_env, span, paths: int) -> tuple[dict, dict]:
    """The record as the evaluation loop kept it step by step (the reference)."""
    trading = make_env(span, num_envs=paths, evaluation=True)
    obs = trading.reset()["observation"]
    capital = trading.capital
    equity = [torch.full((paths,), capital, dtype=torch.float64)]
    rec = {k: [] for k in ("returns", "weights", "targets", "turnover", "fills", "costs")}
    alive = torch.ones(paths, dtype=torch.bool)
    fired = torch.zeros((paths, len(trading.rule_names)), dtype=torch.float64)
    for _ in range(trading.length):
        action = policy(obs).reshape(paths).long()
        state, obs, _, info, terminated, truncated = trading.transition(trading.state, action)
        trading.state = state
        after = trading.account
        last = equity[-1]
        eq = torch.where(alive, after.equity, last)
        rec["returns"].append(torch.where(alive, eq / last - 1.0, torch.zeros_like(last)))
        equity.append(eq)
        held = after.shares * after.mark / after.equity.unsqueeze(-1)
        rec["weights"].append(torch.where(alive.unsqueeze(-1), held, torch.zeros_like(held)))
        rec["targets"].append(
            torch.where(alive.unsqueeze(-1), after.target, torch.zeros_like(after.target))
        )
        zero = torch.zeros_like(last)
        rec["turnover"].append(torch.where(alive, info["turnover"].squeeze(-1).double(), zero))
        rec["fills"].append(torch.where(alive, info["fills"].squeeze(-1).double(), zero))
        paid = info["cost"].squeeze(-1).double() * capital / 1e4
        rec["costs"].append(torch.where(alive, paid, zero))
        fired = fired + info["triggers"].double() * alive.unsqueeze(-1)
        alive = alive & ~terminated
        if bool(truncated.all()):
            break
    out = {k: torch.stack(v, dim=1) for k, v in rec.items()}
    out["equity"] = torch.stack(equity, dim=1)
    counts = dict(zip(trading.rule_names, [int(c) for c in fired.sum(0).tolist()], strict=True))
    return out, counts


@pytest.mark.parametrize("paths", [1, 5])
@pytest.mark.parametrize("rules", ["off", "ending"])
def test_the_record_is_the_step_by_step_record_bitwise(pair, paths, rules) -> None:
    factory = env_factory(
        pair.market, "dual_ticker", risk=ENDING_RULES if rules == "ending" else {}
    )
    gen = torch.Generator()

    def policy(obs: torch.Tensor) -> torch.Tensor:
        return torch.randint(0, 9, obs.shape[:1], generator=gen)

    ended = 0
    for seed in range(2):
        gen.manual_seed(seed)
        want, want_counts = stepped(policy, factory, pair.split.test, paths)
        gen.manual_seed(seed)
        got, counts = evaluate_policy(policy, factory, pair.split.test, paths=paths)
        assert counts == want_counts
        for key in ("equity", "returns", "weights", "targets", "turnover", "fills"):
            assert torch.equal(getattr(got, key), want[key]), key
            assert getattr(got, key).dtype == want[key].dtype, key
        assert torch.equal(got.costs["total"], want["costs"])
        assert got.timestamps.shape == (got.returns.shape[1] + 1,)
        ended += counts["loss_cut"] + counts["profit_lock"]
    assert (ended > 0) == (rules == "ending")  # with the rules on, some episode ended early


def test_the_record_holds_what_the_trade_journal_reads(pair) -> None:
    """Shares, fill and mark prices, each cost component per asset and the bars that ended an
    episode: the per-asset costs add up to the pass's total cost of every bar (which the env
    reports in float32 basis points), and an ended episode pays nothing more."""
    factory = env_factory(pair.market, "dual_ticker", risk=ENDING_RULES)
    gen = torch.Generator().manual_seed(0)

    def policy(obs: torch.Tensor) -> torch.Tensor:
        return torch.randint(0, 9, obs.shape[:1], generator=gen)

    got, counts = evaluate_policy(policy, factory, pair.split.test, paths=5)
    paths, steps = got.returns.shape
    assert got.shares.shape == got.weights.shape == (paths, steps, 2)
    assert got.fill_price.shape == got.mark_price.shape == (steps, 2)
    assert set(got.asset_costs) == {"commission", "spread", "slippage", "impact"}
    per_bar = sum(cost.sum(-1) for cost in got.asset_costs.values())
    assert float(per_bar.sum()) > 0
    torch.testing.assert_close(per_bar, got.costs["total"], rtol=1e-6, atol=1e-3)
    assert 0 < int(got.stopped.sum()) <= counts["loss_cut"] + counts["profit_lock"]
    after = got.stopped.long().cumsum(1) - got.stopped.long() > 0  # bars after an episode end
    assert all(float(cost[after].abs().sum()) == 0 for cost in got.asset_costs.values())
    assert float(got.shares[after].abs().sum()) == 0
