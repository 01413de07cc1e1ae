"""Config groups on disk (experiments/config/groups.py): the options of a group, and the
shorthand ``env.actions=sizing`` for the group override ``env/actions=sizing``."""

from __future__ import annotations

from helpers.configs import compose

from experiments.config.groups import (
    CONF_DIR,
    conf_dirs,
    options,
    rewrite_shorthand,
    searchpath_from_args,
)


def test_the_options_of_a_group_are_its_yaml_files():
    assert options("env/actions", [CONF_DIR]) == ["factors", "sizing", "targets"]
    assert "ppo" in options("model", [CONF_DIR]) and options("nowhere", [CONF_DIR]) == []


def test_a_dotted_override_naming_a_group_option_becomes_a_group_override():
    args = ["+model=ppo", "env.actions=sizing", "model.network=gru", "env.actions.steps=[0.5]"]
    assert rewrite_shorthand(args, [CONF_DIR]) == [
        "+model=ppo",
        "env/actions=sizing",
        "model/network=gru",
        "env.actions.steps=[0.5]",
    ]


def test_values_that_are_not_options_and_sweeps_of_options_are_handled():
    assert rewrite_shorthand(["data.bar_size=1h"], [CONF_DIR]) == ["data.bar_size=1h"]
    assert rewrite_shorthand(["env.actions=sizng"], [CONF_DIR]) == ["env.actions=sizng"]
    assert rewrite_shorthand(["env.reward=pnl,log_return"], [CONF_DIR]) == [
        "env/reward=pnl,log_return"
    ]


def test_the_shorthand_composes_exactly_what_the_group_override_does():
    dotted = compose("+model=ppo", *rewrite_shorthand(["env.actions=sizing"], [CONF_DIR]))
    slashed = compose("+model=ppo", "env/actions=sizing")
    assert dotted == slashed and dotted.env.actions._target_ == "envs.actions.SizingActions"


def test_search_path_folders_on_the_command_line_are_searched_too(tmp_path):
    (tmp_path / "env" / "actions").mkdir(parents=True)
    (tmp_path / "env" / "actions" / "mine.yaml").write_text("_target_: my.Actions\n")
    args = [f"hydra.searchpath=[file://{tmp_path}]", "env.actions=mine"]
    dirs = conf_dirs(searchpath_from_args(args))
    assert dirs[1] == tmp_path
    assert rewrite_shorthand(args, dirs)[1] == "env/actions=mine"
