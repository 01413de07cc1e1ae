"""Read W&B runs from their offline files, in-process.

An offline run's ``run-<id>.wandb`` file is W&B's transaction log: a short header, then
protobuf ``Record`` messages (W&B's own ``wandb_internal_pb2``) framed in 32 KiB blocks the way
LevelDB frames its log (each piece: a 4-byte checksum, a 2-byte length, a 1-byte type: a whole
record, or its first, middle or last piece). :func:`read_run` decodes it with W&B's protobuf
classes in this process, about a millisecond per run, where ``wandb leet inspect`` (W&B's
command-line reader of the same file) costs a process start; ``experiments.compare`` reads a
sweep's runs this way, in parallel (``bench/compare_read.py`` times both).
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from datamodules.errors import UserInputError

HEADER = struct.Struct("<4sHB")  # ident ":W&B", magic 0xBEE1, version 0
IDENT, MAGIC, VERSION = b":W&B", 0xBEE1, 0
BLOCK = 32 * 1024  # bytes per block of the log
PIECE = struct.Struct("<IHB")  # checksum, length, type of each piece of a record
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def offline_runs(root: Path) -> list[Path]:
    """Every offline W&B run folder under ``root`` (a run, a multirun or outputs/)."""
    return sorted(
        p.parent
        for p in Path(root).rglob("run-*.wandb")
        if p.parent.name.startswith(("offline-run-", "run-"))
    )


def read_run(run_folder: Path) -> dict:
    """Config, summary, tags, name, state, group, job type and history of one offline run, as
    plain JSON. ``history`` lists the logged rows in order, each a flat dict of the keys logged
    at that step (``_step``, ``trainer/global_step``, ``val/sharpe``...); ``start_time`` is
    RFC 3339 text as W&B's reader writes it and ``start_ns`` the same instant in nanoseconds
    since the epoch (0 when absent), which orders a resumed run's sessions; ``state`` is
    ``finished`` (exit code 0), ``failed`` (another exit code) or ``running`` (no exit record:
    still running, or killed)."""
    from wandb.proto import wandb_internal_pb2 as pb

    path = _log_file(Path(run_folder))
    data: dict = {
        "run_id": "",
        "name": "",
        "group": "",
        "job_type": "",
        "tags": [],
        "start_time": "",
        "start_ns": 0,
        "state": "running",
        "config": {},
        "summary": {},
        "history": [],
    }
    summary: dict[tuple[str, ...], str] = {}  # the latest JSON text of each summary key
    for payload in _records(path):
        record = pb.Record()
        try:
            record.ParseFromString(payload)
        except Exception:  # a torn last record of a killed run: the rest is read
            break
        entry = record.WhichOneof("record_type")
        if entry == "run":
            _run(data, record.run)
            _latest(summary, record.run.summary.update)
        elif entry == "config":
            _apply(data["config"], record.config.update, record.config.remove)
        elif entry == "summary":  # W&B writes the summary after every logged row: keep the text
            _latest(summary, record.summary.update, record.summary.remove)
        elif entry == "history":
            data["history"].append(_history_row(record.history))
        elif entry == "exit":
            data["state"] = "finished" if record.exit.exit_code == 0 else "failed"
    for keys, value in zip(summary, _decode(summary.values()), strict=True):
        node = data["summary"]
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = value
    # W&B's own bookkeeping is not the run's; a summary value logged as None (a NaN metric)
    # is left out, as W&B's readers leave it out.
    data["config"].pop("_wandb", None)
    data["summary"].pop("_wandb", None)
    data["summary"] = {k: v for k, v in data["summary"].items() if v is not None}
    return data


def rfc3339(seconds: int, nanos: int) -> str:
    """A UTC instant as W&B's own (Go) reader writes it: RFC 3339 with the nanoseconds'
    trailing zeros dropped (``2026-12-01T13:20:57.62028Z``; ``...T13:20:57Z`` on a whole
    second)."""
    stamp = datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")
    fraction = f"{nanos:09d}".rstrip("0")
    return f"{stamp}.{fraction}Z" if fraction else f"{stamp}Z"


def _log_file(folder: Path) -> Path:
    files = sorted(folder.glob("run-*.wandb")) if folder.is_dir() else [folder]
    if not files or not files[0].is_file():
        raise UserInputError(f"No W&B run file (run-<id>.wandb) in {folder}.")
    return files[0]


def _records(path: Path) -> Iterator[bytes]:
    """The payload of each record of the log, in order; a torn tail (a run killed while
    writing) ends the iteration."""
    raw = path.read_bytes()
    if len(raw) < HEADER.size:
        raise UserInputError(f"{path} is not a W&B run file: it is {len(raw)} bytes long.")
    ident, magic, version = HEADER.unpack_from(raw)
    if ident != IDENT or magic != MAGIC or version != VERSION:
        raise UserInputError(
            f"{path} is not a W&B run file this reader knows (header {raw[:7]!r}; expected "
            f"{IDENT!r}, magic {MAGIC:#x}, version {VERSION})."
        )
    pos, parts = HEADER.size, []
    while pos + PIECE.size <= len(raw):
        left = BLOCK - pos % BLOCK
        if left < PIECE.size:  # the block's tail is padding
            pos += left
            continue
        checksum, length, piece = PIECE.unpack_from(raw, pos)
        start, end = pos + PIECE.size, pos + PIECE.size + length
        if piece == 0 and length == 0:  # zero padding (a preallocated or torn tail)
            break
        if end > len(raw) or zlib.crc32(raw[start:end], zlib.crc32(bytes([piece]))) != checksum:
            break
        pos = end
        if piece == FULL:
            yield raw[start:end]
        elif piece == FIRST:
            parts = [raw[start:end]]
        elif piece == MIDDLE and parts:
            parts.append(raw[start:end])
        elif piece == LAST and parts:
            parts.append(raw[start:end])
            yield b"".join(parts)
            parts = []


def _value(item) -> object:
    return json.loads(item.value_json, parse_constant=str)


def _decode(texts) -> list:
    """Many JSON texts decoded in one call (as one JSON array: each text is a whole value).
    W&B writes non-finite numbers as the bare words NaN, Infinity and -Infinity; they are kept
    as those strings, as W&B's readers give them (plain JSON has no such numbers)."""
    return json.loads("[" + ",".join(texts) + "]", parse_constant=str)


def _latest(latest: dict[tuple[str, ...], str], updates, removals=()) -> None:
    """Summary items into ``latest`` (key path -> JSON text), in the order of the records: the
    last write of a key wins."""
    for item in updates:
        latest[tuple(item.nested_key) or (item.key,)] = item.value_json
    for item in removals:
        latest.pop(tuple(item.nested_key) or (item.key,), None)


def _apply(target: dict, updates, removals=()) -> None:
    """Config or summary items into ``target`` (``nested_key`` paths as nested dicts)."""
    for item in updates:
        keys = list(item.nested_key) or [item.key]
        node = target
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = _value(item)
    for item in removals:
        keys = list(item.nested_key) or [item.key]
        node = target
        for key in keys[:-1]:
            node = node.get(key, {})
        node.pop(keys[-1], None)


def _history_row(history) -> dict:
    row: dict = {}
    texts: dict[str, str] = {}
    for item in history.item:
        key = ".".join(item.nested_key) if item.nested_key else item.key
        if item.value_json:
            texts[key] = item.value_json
            row[key] = None  # placeholder: keeps the logged order
        else:
            which = item.WhichOneof("value")
            row[key] = None if which in (None, "none") else getattr(item, which)
    row.update(zip(texts, _decode(texts.values()), strict=True))
    if history.HasField("step") and "_step" not in row:
        row["_step"] = history.step.num
    return row


def _run(data: dict, run) -> None:
    data["run_id"] = run.run_id
    data["name"] = run.display_name
    data["group"] = run.run_group
    data["job_type"] = run.job_type
    data["tags"] = list(run.tags)
    if run.HasField("start_time"):
        data["start_ns"] = run.start_time.ToNanoseconds()  # for ordering sessions
        data["start_time"] = rfc3339(run.start_time.seconds, run.start_time.nanos)
    _apply(data["config"], run.config.update)
