"""report.html of a run and comparison.html of a sweep: one self-contained page each (no
script, nothing fetched), every chart there, the numbers the page shows equal to metrics.json
and comparison.csv / selection.csv, and the run's page logged to its W&B run as HTML. Both
pages are also opened in headless Chromium (helpers.browser): no console error, every chart
drawn, the numbers shown equal to the files, a screenshot saved."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from helpers.browser import open_page, require_chromium
from helpers.cli import TINY, run_app, run_compare, run_folders

from experiments.reports.charts import rolling_moments
from experiments.reports.page import MAX_POINTS, thin

# A normal agent run with the default (offline W&B) logger, small enough for the default suite.
AGENT_RUN = [
    "+model=ppo",
    "env=dual_ticker",
    "data.synthetic.sessions=60",
    "env.num_envs=8",
    "env.episode.length=16",  # episodes end inside training: an episode-return curve
    "++model.collector.frames_per_env=8",
    "++model.collector.iterations=4",
    "++model.eval.every_n_iterations=1",
    "print_config=false",
    "quiet=true",
    "export.enabled=false",
]
RUN_CHARTS = {"equity", "rolling_sharpe", "monthly_returns", "return_distribution"}


@pytest.fixture(scope="module")
def agent_run(tmp_path_factory) -> Path:
    """The folder of one finished agent run."""
    out = tmp_path_factory.mktemp("report") / "outputs"
    done = run_app(*AGENT_RUN, output_root=out)
    assert done.returncode == 0, done.stderr[-3000:]
    (folder,) = run_folders(out)
    return folder


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    """A finished sweep of two configurations and its comparison."""
    out = tmp_path_factory.mktemp("report_sweep") / "outputs"
    done = run_app("-m", "+model=lstm", "model.network.hidden_size=8,16", *TINY, output_root=out)
    assert done.returncode == 0, done.stderr[-3000:]
    [folder] = {f.parent for f in run_folders(out)}
    done = run_compare(str(folder))
    assert done.returncode == 0, done.stderr[-3000:]
    return folder


class Page(HTMLParser):
    """What a test needs of a page: its ``data-key`` values, charts, tables and links."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.keys: dict[str, str] = {}
        self.charts: list[str] = []
        self.tables: list[str] = []
        self.tags: set[str] = set()
        self.fetched: list[str] = []  # src/href pointing off the page
        self._key: str | None = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.add(tag)
        for name in ("src", "href"):
            if a.get(name) and not a[name].startswith(("data:", "#")):
                self.fetched.append(a[name])
        if "data-key" in a:
            self._key = a["data-key"]
        if "data-chart" in a:
            self.charts.append(a["data-chart"])
        if "data-table" in a:
            self.tables.append(a["data-table"])

    def handle_data(self, data):
        if self._key is not None:
            self.keys[self._key] = data
            self._key = None


def lookup(source: dict, key: str):
    value = source
    for part in key.split("."):
        value = value[part]
    return value


def test_every_run_writes_a_self_contained_report(agent_run):
    page = Page((agent_run / "report.html").read_text())
    assert "script" not in page.tags and not page.fetched  # nothing to run or fetch
    assert RUN_CHARTS | {"learning_curves"} <= set(page.charts)
    assert {"metrics_test", "metrics_val", "risk", "overrides"} <= set(page.tables)
    metrics = json.loads((agent_run / "metrics.json").read_text())
    if metrics.get("trades"):
        assert "trades_test" in page.tables


def test_the_numbers_in_the_report_are_those_of_metrics_json(agent_run):
    metrics = json.loads((agent_run / "metrics.json").read_text())
    keys = Page((agent_run / "report.html").read_text()).keys
    for series in ("strategy", "buy_and_hold", "flat", "random"):
        for metric in ("sharpe", "total_return", "max_drawdown"):
            shown = metrics["test"][series][metric] is not None  # flat has no Sharpe ratio
            assert (f"test.{series}.{metric}" in keys) == shown, (series, metric)
    sharpe = "statistics.test.intervals.strategy.sharpe"
    assert f"{sharpe}.low" in keys and f"{sharpe}.high" in keys
    for key, text in keys.items():
        if key.startswith(("test.", "val.", "statistics.", "trades.", "risk_")):
            assert float(text) == pytest.approx(float(lookup(metrics, key)), abs=6e-5), key


def test_the_report_shows_the_verdict_overrides_and_learning_curves(agent_run):
    text = (agent_run / "report.html").read_text()
    metrics = json.loads((agent_run / "metrics.json").read_text())
    assert metrics["statistics"]["test"]["verdict"].replace("'", "&#x27;") in text
    for override in ("+model=ppo", "env=dual_ticker", "env.episode.length=16"):
        assert f"<code>{override}</code>" in text
    curves = pl.read_csv(agent_run / "learning_curves.csv")
    assert curves.height == 4
    assert f"{curves.height} iterations, {int(curves['frames'][-1])} frames." in text
    assert "train/episode_return" in curves.columns  # episodes of 16 bars ended


def test_the_report_is_logged_to_the_wandb_run_as_html(agent_run):
    (run,) = (agent_run / "wandb").glob("offline-run-*")
    logged = list((run / "files" / "media" / "html").glob("report_*.html"))
    assert len(logged) == 1
    assert logged[0].read_text() == (agent_run / "report.html").read_text()
    records = next(run.glob("run-*.wandb")).read_bytes()
    assert b'"_type": "html-file"' in records or b"html-file" in records


def test_a_forecaster_run_writes_its_report_too(sweep):
    for folder in run_folders(sweep):
        page = Page((folder / "report.html").read_text())
        assert set(page.charts) >= RUN_CHARTS and "metrics_test" in page.tables
        assert "learning_curves" not in page.charts  # a forecaster keeps none


def test_a_sweep_comparison_writes_comparison_html_with_its_table_and_statistics(sweep):
    page = Page((sweep / "comparison.html").read_text())
    assert "script" not in page.tags and not page.fetched
    assert {"comparison", "selection"} <= set(page.tables)
    assert len(page.charts) >= 2  # equity and learning curves at least, embedded PNGs
    table = pl.read_csv(sweep / "comparison.csv")
    selection = pl.read_csv(sweep / "selection.csv")
    checked = 0
    for key, text in page.keys.items():
        name, row, column = key.split(".", 2)
        frame = {"comparison": table, "selection": selection}.get(name)
        if frame is not None:
            assert float(text) == pytest.approx(float(frame[column][int(row)]), abs=6e-5), key
            checked += 1
    assert checked >= table.height * 2
    words = (sweep / "comparison.html").read_text()
    assert re.search(r"Probability of backtest overfitting|Deflated Sharpe|Probabilistic", words)


# ------------------------------------------------------------------ in a real browser
def assert_drawn(charts: list[dict], names: set[str]) -> None:
    assert names <= {c["name"] for c in charts}
    for chart in charts:
        assert chart["width"] > 200 and chart["height"] > 60, chart
        assert chart["shapes"] > 10, chart  # lines, bars, cells or a decoded image


def test_the_run_report_renders_in_chromium_with_the_numbers_of_metrics_json(agent_run, tmp_path):
    require_chromium()
    opened = open_page(agent_run / "report.html", tmp_path / "report.png")
    assert opened.errors == [] and opened.requests == []
    assert_drawn(opened.charts, RUN_CHARTS | {"learning_curves"})
    metrics = json.loads((agent_run / "metrics.json").read_text())
    checked = 0
    for key, text in opened.keys.items():
        if key.startswith(("test.", "val.", "statistics.", "trades.", "risk_")):
            assert float(text) == pytest.approx(float(lookup(metrics, key)), abs=6e-5), key
            checked += 1
    assert checked > 50
    assert opened.screenshot.stat().st_size > 50_000


def test_the_comparison_renders_in_chromium_with_the_numbers_of_its_csv(sweep, tmp_path):
    require_chromium()
    opened = open_page(sweep / "comparison.html", tmp_path / "comparison.png")
    assert opened.errors == [] and opened.requests == []
    assert len(opened.charts) >= 2
    assert_drawn(opened.charts, set())
    table = pl.read_csv(sweep / "comparison.csv")
    for key, text in opened.keys.items():
        name, row, column = key.split(".", 2)
        if name == "comparison":
            assert float(text) == pytest.approx(float(table[column][int(row)]), abs=6e-5), key
    assert opened.screenshot.stat().st_size > 20_000


def test_the_rolling_sharpe_is_the_windowed_mean_over_std_and_long_series_are_thinned():
    x = np.random.default_rng(0).normal(0.0, 1e-3, 5000)
    mean, sd = rolling_moments(x, 120)
    view = np.lib.stride_tricks.sliding_window_view(x, 120)
    assert np.allclose(mean, view.mean(axis=1), atol=1e-15)
    assert np.allclose(sd, view.std(axis=1, ddof=1), rtol=1e-9)
    (short,) = thin(x)
    assert len(short) <= MAX_POINTS and short[0] == x[0]
