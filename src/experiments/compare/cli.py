"""``python -m experiments.compare PATH_OR_GROUP [--metric test/sharpe] [--online ENTITY/PROJECT]``

Compares W&B runs: offline runs under PATH (a sweep folder, a run folder or outputs/), read
in-process from their .wandb files (W&B's protobuf records), in parallel, or with ``--online
ENTITY/PROJECT`` the runs of W&B group PATH_OR_GROUP through the W&B API. Prints one row per
configuration (the config keys that differ between runs; runs differing only by seed
aggregated as mean ± std), sorted by the metric, and a bootstrap CI of the difference between
the best two; then what the sweep's size does to its winner, from the per-bar returns every
run kept (:mod:`experiments.compare.selection`): the deflated Sharpe ratio of the best
configuration, the probability of backtest overfitting (CSCV on validation returns), Hansen's
SPA test of the best against buy-and-hold and, for CPCV folds, the distribution of the
backtest paths' Sharpe ratios. Writes comparison.csv (per configuration), runs.csv (per run),
selection.csv, cpcv_paths.csv (CPCV sweeps), comparison.md and PNG plots of learning curves,
test equity curves, the PBO logits and the CPCV path Sharpes into PATH (or --out).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import polars as pl
from rich.console import Console
from rich.table import Table

from datamodules.errors import UserInputError
from experiments.compare import table as cmp
from experiments.compare.offline import offline_runs, read_run
from experiments.compare.plots import equity_curves, learning_curves
from experiments.compare.selection import SweepReport, sweep_report
from experiments.compare.table import MEAN, STD, RunRecord
from experiments.reports.sweep_page import write_comparison_html
from experiments.run.console import table_console

CURVES_PNG, EQUITY_PNG = "comparison_learning_curves.png", "comparison_equity_test.png"
HISTORY_SAMPLES = 2000  # rows of each online run's history to fetch (W&B samples long ones)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m experiments.compare",
        description="Compare W&B runs: a table of the configurations that differ, sorted by a "
        "metric (seeds aggregated as mean ± std), a bootstrap CI of the best two, the deflated "
        "Sharpe ratio, probability of backtest overfitting and SPA test of the sweep, CPCV "
        "path Sharpes, CSV, Markdown and plots.",
    )
    parser.add_argument(
        "path_or_group",
        help="a sweep folder (outputs/multirun/<date>/<time>), a run folder or outputs/; "
        "with --online, a W&B group name",
    )
    parser.add_argument("--metric", default="test/sharpe", help="summary metric to sort by")
    parser.add_argument(
        "--minimize", action="store_true", help="lower is better (losses, drawdown duration)"
    )
    parser.add_argument(
        "--online", metavar="ENTITY/PROJECT", help="read the group's runs from the W&B API"
    )
    parser.add_argument(
        "--out", type=Path, help="folder for the files (default: PATH, or outputs/compare/GROUP)"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    """Run the comparison; bad input exits with status 2 and one paragraph on stderr."""
    args = parse_args(argv)
    try:
        compare(args)
    except UserInputError as err:
        print(f"Error: {err}", file=sys.stderr)
        sys.exit(2)


def compare(args: argparse.Namespace) -> Path:
    """Read, tabulate, print, write and plot; return the output folder."""
    if args.online:
        records = load_online(args.online, args.path_or_group)
        where = f"group '{args.path_or_group}' of {args.online}"
        out = args.out or Path("outputs") / "compare" / args.path_or_group
    else:
        path = Path(args.path_or_group)
        records = load_offline(path)
        where = str(path)
        out = args.out or (path if path.is_dir() else path.parent)

    known = cmp.numeric_metrics(r.summary for r in records)
    if args.metric not in known:
        raise UserInputError(
            f"No run in {where} logged the metric '{args.metric}' ({len(records)} runs read). "
            f"Known metrics: {', '.join(known) or 'none'}."
        )
    with_metric = [r for r in records if cmp.number(r.summary.get(args.metric)) is not None]
    if not with_metric:
        raise UserInputError(
            f"No run in {where} has a finite value of '{args.metric}' ({len(records)} runs "
            "read; a crashed or interrupted run has no test metrics)."
        )
    keys = cmp.differing_keys([r.config for r in with_metric])
    metrics = cmp.metrics_to_show(args.metric, known)
    runs = cmp.runs_frame(with_metric, keys, metrics)
    table = cmp.aggregate(runs, keys, metrics, minimize=args.minimize)
    diff = cmp.best_two(table, runs, keys, args.metric)
    sentence = "Only one configuration: nothing to compare." if diff is None else diff.sentence()

    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserInputError(
            f"Cannot write the comparison to {out} ({err}); pick --out DIR."
        ) from None
    console = table_console()  # a file or a pipe: wide enough for a few key columns
    title = (
        f"{_count(len(with_metric), 'run')} in {_count(table.height, 'configuration')}, "
        f"sorted by {args.metric} "
        f"({'lower' if args.minimize else 'higher'} is better)"
    )
    console.print(rich_table(table, keys, metrics, title))
    _say(console, *key_notes(keys), sentence)
    sweep = sweep_report(out, with_metric, runs, table, keys, args.metric)
    _say(console, *sweep.lines)
    left_out = [r.name for r in records if cmp.number(r.summary.get(args.metric)) is None]
    notes = [f"Left out (no {args.metric}): {', '.join(left_out)}."] if left_out else []
    files = write_files(out, with_metric, runs, table, keys, metrics, sentence, notes, sweep)
    pngs = [out / f for f in files if f.endswith(".png")]
    said = [sentence, *sweep.lines]
    files.append(write_comparison_html(out, title, table, said, notes, pngs).name)
    _say(console, *notes, f"Wrote {', '.join(files)} to {out}")
    return out


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _say(console: Console, *lines: str) -> None:
    for line in lines:
        console.print(line, markup=False, highlight=False, soft_wrap=True)


def key_notes(keys: Sequence[str]) -> list[str]:
    """The full names of the shortened key columns, or how many keys differ when many do."""
    if len(keys) > cmp.MAX_KEY_COLUMNS:
        return [f"{len(keys)} config keys differ: comparison.md and comparison.csv list them all."]
    full = [f"{s} = {k}" for k, s in cmp.short_names(keys).items() if s != k]
    return [f"Keys: {'; '.join(full)}"] if full else []


def write_files(
    out: Path,
    records: Sequence[RunRecord],
    runs: pl.DataFrame,
    table: pl.DataFrame,
    keys: Sequence[str],
    metrics: Sequence[str],
    sentence: str,
    notes: list[str],
    sweep: SweepReport | None = None,
) -> list[str]:
    """comparison.csv, runs.csv, the plots and comparison.md (the table, ``sentence``, the
    sweep statistics and ``notes``, to which a missing plot adds one); return the file names
    (with those the sweep statistics wrote)."""
    table.write_csv(out / "comparison.csv")
    runs.write_csv(out / "runs.csv")
    plots = [
        p
        for p in (
            learning_curves(out / CURVES_PNG, records, table, keys, metrics[0]),
            equity_curves(out / EQUITY_PNG, records, table, keys),
        )
        if p is not None
    ]
    if not any(p.name == EQUITY_PNG for p in plots):
        notes.append("No equity_test.csv in the run folders: no test equity plot.")
    if not any(p.name == CURVES_PNG for p in plots):
        notes.append("No validation or training curve in the runs' history: no learning curves.")
    extra = sweep.files if sweep is not None else []
    plots += [p for p in extra if p.suffix == ".png"]
    said = [sentence, *(sweep.lines if sweep is not None else [])]
    (out / "comparison.md").write_text(markdown(table, keys, metrics, said, notes, plots))
    written = ["comparison.csv", "runs.csv", "comparison.md", *(p.name for p in plots)]
    return written + [p.name for p in extra if p.suffix != ".png"]


# ---------------------------------------------------------------------------------- reading
def load_offline(path: Path) -> list[RunRecord]:
    """Every offline W&B run under ``path``, resumed runs merged into one record."""
    if not path.exists():
        raise UserInputError(
            f"{path} does not exist. Give a sweep folder (outputs/multirun/<date>/<time>), a "
            "run folder or outputs/; to compare a W&B group on a server, add --online "
            "ENTITY/PROJECT."
        )
    folders = offline_runs(path if path.is_dir() else path.parent)
    if not folders:
        raise UserInputError(
            f"No W&B runs under {path}: found no wandb/offline-run-*/run-*.wandb file. Runs "
            "leave one with the default logger=wandb (not with logger=none)."
        )
    # In-process reads: the file reads and protobuf parsing of many runs overlap in threads.
    workers = max(1, min(len(folders), 8, os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        read = list(pool.map(_try_read, folders))
    failed = [err for data, err in read if data is None]
    if len(failed) == len(folders):
        raise UserInputError(failed[0])
    for err in failed:  # one unreadable run does not hide the others
        print(f"Skipped a run: {err}", file=sys.stderr)
    raw = [(data, folder) for (data, _), folder in zip(read, folders, strict=True) if data]
    records = [_offline_record(data, folder) for data, folder in raw]
    # Sessions of a resumed run in the order they started (zero-padded: sorts as text).
    starts = [f"{int(data.get('start_ns') or 0):020d}" for data, _ in raw]
    return merge_resumed(records, starts)


def _try_read(folder: Path) -> tuple[dict | None, str]:
    try:
        return read_run(folder), ""
    except UserInputError as err:
        return None, str(err)


def _offline_record(data: dict, wandb_folder: Path) -> RunRecord:
    config = cmp.flatten(data.get("config") or {})
    config["job_type"] = data.get("job_type", "")
    # The run folder is W&B's save_dir, the parent of wandb/: metrics.json and equity_test.csv.
    folder = wandb_folder.parent.parent if wandb_folder.parent.name == "wandb" else None
    return RunRecord(
        run_id=str(data.get("run_id", wandb_folder.name)),
        name=str(data.get("name") or wandb_folder.name),
        config=config,
        summary=dict(data.get("summary") or {}),
        history=list(data.get("history") or []),
        group=str(data.get("group", "")),
        job_type=str(data.get("job_type", "")),
        state=str(data.get("state", "")),
        folder=folder,
    )


def merge_resumed(records: list[RunRecord], start_times: list[str]) -> list[RunRecord]:
    """A resumed run leaves one offline folder per session under the same run id: one record,
    with the histories in order, the summaries merged and the latest config."""
    by_id: dict[str, list[tuple[str, RunRecord]]] = {}
    for start, record in zip(start_times, records, strict=True):
        by_id.setdefault(record.run_id, []).append((start, record))
    merged = []
    for parts in by_id.values():
        parts.sort(key=lambda p: p[0])
        last = parts[-1][1]
        if len(parts) > 1:
            last.summary = {k: v for _, r in parts for k, v in r.summary.items()}
            last.history = [row for _, r in parts for row in r.history]
        merged.append(last)
    return merged


def load_online(project: str, group: str) -> list[RunRecord]:
    """The runs of W&B group ``group`` in ``project`` (ENTITY/PROJECT), through the W&B API."""
    entity, _, name = project.partition("/")
    if not entity or not name or "/" in name:
        raise UserInputError(
            f"--online takes ENTITY/PROJECT (e.g. my-team/trading); got {project}."
        )
    import wandb

    failures: tuple[type[BaseException], ...] = (wandb.errors.Error, ValueError, OSError)
    try:
        import requests

        failures += (requests.exceptions.RequestException,)
    except ImportError:
        pass
    try:
        api = wandb.Api()  # HTTP timeout: WANDB_HTTP_TIMEOUT (seconds), else wandb's default
        runs = list(api.runs(project, filters={"group": group}))
        if not runs:
            recent = []
            for i, run in enumerate(api.runs(project, order="-created_at", per_page=50)):
                if i >= 50:
                    break
                if run.group and run.group not in recent:
                    recent.append(run.group)
            raise UserInputError(
                f"No runs in W&B group '{group}' of {project}. Groups of its latest runs: "
                f"{', '.join(recent) or 'none'}. A sweep's jobs share the group "
                "sweep-<date>-<time>, shown on each run's W&B page."
            )
        return [_online_record(run) for run in runs]
    except UserInputError:
        raise
    except failures as err:
        reason = " ".join(str(err).split()) or type(err).__name__
        raise UserInputError(
            f"Could not read the runs of W&B group '{group}' in {project} "
            f"({type(err).__name__}: {reason}). Check the network, that you are logged in "
            "(`wandb login` or WANDB_API_KEY), WANDB_BASE_URL for a private server, and the "
            "ENTITY/PROJECT spelling. Offline runs need no network: pass their folder without "
            "--online."
        ) from None


def _online_record(run) -> RunRecord:
    config = cmp.flatten(dict(run.config))
    config["job_type"] = run.job_type or ""
    return RunRecord(
        run_id=str(run.id),
        name=str(run.name or run.id),
        config=config,
        summary=dict(run.summary_metrics),
        history=list(run.history(samples=HISTORY_SAMPLES, pandas=False)),
        group=str(run.group or ""),
        job_type=str(run.job_type or ""),
        state=str(run.state or ""),
        folder=None,
        fetch_file=lambda path, run=run: _download(run, path),
    )


def _download(run, path: str) -> Path | None:
    """One file of an online run (a logged table's JSON), downloaded once into a temporary
    folder; None when the run has no such file."""
    import tempfile

    root = Path(tempfile.gettempdir()) / "experiments-compare" / str(run.id)
    target = root / path
    if not target.exists():
        try:
            run.file(path).download(root=str(root), replace=True)
        except Exception as err:  # noqa: BLE001 - a missing file leaves the run out, with a note
            print(f"Could not download {path} of run {run.id}: {err}", file=sys.stderr)
            return None
    return target


# ---------------------------------------------------------------------------------- output
def rich_table(table: pl.DataFrame, keys: Sequence[str], metrics: Sequence[str], title: str):
    """The per-configuration rows as a rich Table: keys (or, with many, one compact column of
    departures from the most common values), n, then mean ± std of each metric."""
    short = cmp.short_names(keys)
    wide = len(keys) > cmp.MAX_KEY_COLUMNS
    out = Table(title=title)
    out.add_column("#", justify="right")
    for key in ["configuration"] if wide else keys:
        out.add_column(short.get(key, key))
    out.add_column("n", justify="right")
    for m in metrics:
        out.add_column(m, justify="right")
    labels = cmp.config_labels(table, keys)
    for i, row in enumerate(table.iter_rows(named=True)):
        cells = [labels[i]] if wide else ["-" if row[k] is None else str(row[k]) for k in keys]
        cells = [str(i + 1), *cells, str(row["n"])]
        cells += [cmp.mean_std_text(row[f"{m}{MEAN}"], row[f"{m}{STD}"]) for m in metrics]
        out.add_row(*cells)
    return out


def markdown(
    table: pl.DataFrame,
    keys: Sequence[str],
    metrics: Sequence[str],
    sentences: Sequence[str],
    notes: Sequence[str],
    plots: Sequence[Path],
) -> str:
    """comparison.md: the table (full key names), the CI sentence and the sweep statistics
    (one paragraph each), notes and the plots."""
    head = ["#", *keys, "n", *(f"{m} (mean ± std)" for m in metrics)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for i, row in enumerate(table.iter_rows(named=True), start=1):
        cells = [str(i), *("-" if row[k] is None else str(row[k]) for k in keys), str(row["n"])]
        cells += [cmp.mean_std_text(row[f"{m}{MEAN}"], row[f"{m}{STD}"]) for m in metrics]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    body = ["# Comparison", "", *lines, ""]
    for said in sentences:
        body += [said, ""]
    body += [f"{n}" for n in notes] + ([""] if notes else [])
    body += [f"![{p.stem}]({p.name})" for p in plots]
    return "\n".join(body).rstrip() + "\n"
