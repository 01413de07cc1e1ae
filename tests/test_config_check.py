"""The config check: every key, type, range and ``_target_`` of a composed config is checked
before torch, Lightning or the data are touched, with one paragraph naming the key."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from helpers.configs import compose

from datamodules.errors import ConfigError
from experiments.config import targets
from experiments.config.check import check_config
from experiments.config.job import check_job


def refused(*overrides: str) -> str:
    cfg = compose(*overrides)
    with pytest.raises(ConfigError) as err:
        check_job(cfg)
    message = str(err.value)
    assert "\n" not in message.strip(), message  # one paragraph
    return message


@pytest.mark.parametrize("model", ["+model=lstm", "+model=transformer", "+model=ppo", "+model=dqn"])
def test_every_shipped_model_passes_the_check(model):
    check_job(compose(model))


def test_a_negative_cost_is_refused_naming_the_key_and_what_is_allowed():
    message = refused("+model=ppo", "env.costs.commission_bps=-1")
    assert "env.costs.commission_bps is -1" in message and ">= 0" in message


def test_a_typo_in_a_key_names_the_key_its_target_and_the_closest_known_key():
    message = refused("+model=lstm", "+env.costs.comission_bps=1")
    assert "env.costs.comission_bps is not a setting of env.costs" in message
    assert "envs.frictions.Frictions" in message and "did you mean commission_bps" in message


def test_a_typo_at_the_top_level_is_refused():
    assert "did you mean seed" in refused("+model=lstm", "+seeed=3")


def test_a_value_of_the_wrong_type_names_the_expected_type():
    message = refused("+model=ppo", "env.num_envs=many")
    assert "env.num_envs is 'many'" in message and "'auto'" in message


def test_an_unknown_target_is_refused_with_the_nearest_name():
    message = refused("+model=ppo", "model._target_=modules.agents.ppo.PPOModul")
    assert "model._target_ is 'modules.agents.ppo.PPOModul'" in message
    assert "Did you mean PPOModule" in message


def test_a_target_in_a_module_that_does_not_exist_is_refused():
    message = refused("+model=ppo", "env.actions._target_=nowhere.at.all.Actions")
    assert "no module named 'nowhere.at.all'" in message


def test_a_misspelt_group_option_lists_the_options():
    message = refused("+model=ppo", "env.actions=sizng")
    assert "did you mean sizing" in message and "factors, sizing, targets" in message


def test_the_env_plug_ins_are_built_so_their_checks_run_before_any_data():
    assert "env.reward.scale is -1" in refused("+model=ppo", "env.reward.scale=-1")
    assert "env.risk.max_daily_drawdown" in refused("+model=ppo", "env.risk.max_daily_drawdown=0")


def test_bounds_of_partial_plug_ins_are_read_from_their_annotations():
    # TradingEnv and the networks are built later with runtime objects; their bounds
    # (Annotated[int, ">= 1"]) are checked now.
    assert "env.num_envs is -3; expected a whole number >= 1" in refused(
        "+model=ppo", "env.num_envs=-3"
    )
    assert "model.network.dropout is 1.5; expected a number >= 0 and < 1" in refused(
        "+model=lstm", "model.network.dropout=1.5"
    )


def test_ranges_of_the_model_sections_are_checked():
    assert "model.replay.size" in refused("+model=dqn", "model.replay.batch_size=0")
    assert "model.collector.frames_per_env" in refused(
        "+model=ppo", "model.collector.frames_per_env=0"
    )
    assert "model.task.num_classes" in refused("+model=lstm", "model.task.num_classes=4")


def test_the_data_source_is_built_so_its_checks_run_before_any_data():
    assert "data.bar_size" in refused("+model=lstm", "data.bar_size=7parsecs")
    assert "AAPL, GOOG, IBM, MSFT" in refused("+model=lstm", "data=sample", "env.tickers=[TSLA]")


def test_a_curriculum_in_units_the_model_does_not_use_is_refused():
    message = refused("+model=lstm", "curriculum=dual_ticker_3phase")
    assert "in frames, which this model does not use" in message and "epochs, steps" in message


def test_run_settings_are_checked():
    assert "export.tolerance" in refused("+model=ppo", "export.tolerance=-1")
    assert "hardware.precision" in refused("+model=ppo", "hardware.precision=17")
    assert "hardware.keep_freed_mib is 0" in refused("+model=ppo", "hardware.keep_freed_mib=0")


def test_several_problems_are_counted_after_the_first():
    message = refused("+model=ppo", "env.num_envs=many", "model.collector.frames_per_env=0")
    assert "1 more problem" in message


def test_a_missing_value_is_named():
    message = refused("+model=lstm", "data.window=???")
    assert "data.window must be set" in message


def test_no_model_is_its_own_message_naming_the_choices():
    with pytest.raises(ConfigError) as err:
        check_job(compose())
    assert "+model=NAME" in str(err.value) and "ppo" in str(err.value)


def test_the_check_imports_no_torch(tmp_path):
    # How fast it is, is measured by bench/config_check.py, not asserted here.
    script = textwrap.dedent(
        """
        import sys
        from hydra import compose, initialize_config_dir
        from experiments.config.groups import CONF_DIR
        from experiments.config.job import check_job
        from experiments.config.resolvers import register_resolvers
        from datamodules.errors import ConfigError
        register_resolvers()
        with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
            cfg = compose("config", overrides=["+model=ppo", "env.costs.commission_bps=-1"])
        try:
            check_job(cfg)
        except ConfigError:
            pass
        heavy = [m for m in ("torch", "pytorch_lightning", "torchrl", "wandb") if m in sys.modules]
        print(heavy)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert done.stdout.strip() == "[]", done.stdout + done.stderr


# ------------------------------------------------------------------ the static reader
def test_targets_are_read_without_importing_them():
    script = textwrap.dedent(
        """
        import sys
        from experiments.config import targets
        sig = targets.signature(targets.resolve_target("modules.agents.ppo.PPOModule"))
        print(sorted(sig.params), "modules.agents.ppo" in sys.modules, "torch" in sys.modules)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.stdout.strip().endswith("False False"), done.stdout + done.stderr
    for section in ("network", "collector", "loss", "optim", "eval", "checkpoint"):
        assert f"'{section}'" in done.stdout


def test_dataclass_fields_are_collected_through_base_classes():
    sig = targets.signature(targets.resolve_target("datamodules.sources.synthetic.SyntheticSource"))
    assert {"tickers", "bar_size", "split", "features", "seed", "synthetic"} <= set(sig.params)
    assert sig.dataclass and "name" not in sig.params  # a ClassVar is not a field


def test_re_exports_are_followed_to_the_definition():
    symbol = targets.resolve_target("torch.optim.AdamW")
    assert symbol.qualname == "torch.optim.adamw.AdamW"
    assert "lr" in targets.signature(symbol).params


def test_heavy_modules_are_told_apart_from_light_ones():
    assert targets.heavy_import("envs.frictions") is None
    assert targets.heavy_import("experiments.config.schema") is None
    assert targets.heavy_import("modules.agents.config") is None
    assert targets.heavy_import("modules.agents.ppo") == "torch"


def test_a_class_constant_is_read_statically():
    symbol = targets.resolve_target("modules.agents.dqn.DQNModule")
    assert set(targets.class_constant(symbol, "lengths")) == {"frames", "iterations", "episodes"}


def test_a_plain_mapping_is_checked_too():
    with pytest.raises(ConfigError, match="env.costs.spread_bps"):
        check_config(
            {
                "data": {
                    "_target_": "datamodules.sources.synthetic.SyntheticSource",
                    "tickers": ["A"],
                },
                "env": {
                    "_target_": "envs.trading.TradingEnv",
                    "_partial_": True,
                    "costs": {"spread_bps": "wide"},
                },
            }
        )
