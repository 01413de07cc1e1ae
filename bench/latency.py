"""Single-observation inference latency of exported models, one thread: the default
dual_ticker PPO policy (MLP 64x64, tanh) and the default LSTM forecaster (window 64).

The models are built from ``conf/`` with Hydra's compose API and exported untrained (weights do
not change latency) through the same :func:`experiments.export.bundle.export_model` a run uses, into
a temporary folder. Each row times one call on one sample with ``time.perf_counter_ns``:
p50 / p99 / p99.9 in microseconds over ``--calls`` calls (default 10,000) after ``--warmup``
calls. Rows: eager torch (the inference wrapper, ``torch.inference_mode``), TorchScript,
``torch.export`` (the .pt2 program's module), a bare ONNX Runtime ``session.run``, the
inference API end to end from a numpy sample (``Policy.load`` / ``Forecaster.load``, ONNX
Runtime and TorchScript), and for PPO a hand-written numpy forward of the same MLP (the floor).
Load time and peak memory of each bundle (RSS growth of a fresh process over the load and one
call) are measured in a subprocess per runtime.

Targets (reported, not asserted): PPO through ``Policy.load`` with ONNX Runtime p99 <= 30 us;
LSTM forecaster p99 <= 1 ms; bundle load < 1 s.

Run (from the repository root, in the venv)::

    python bench/latency.py                  # about 1 minute on 2 quiet cores
    python bench/latency.py --quick          # smoke run: 1,000 calls
    python bench/latency.py --json /tmp/latency.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MODELS = {
    "ppo": ["+model=ppo", "env=dual_ticker", "env.num_envs=2"],
    "lstm": ["+model=lstm"],
}
TARGETS_US = {
    ("ppo", "Policy.load (onnxruntime)"): 30.0,
    ("lstm", "Forecaster.load (onnxruntime)"): 1000.0,
}
LOAD_TARGET_S = 1.0


def build_bundle(name: str, folder: Path, sessions: int, verify: int) -> Path:
    """Compose, build (seeded, untrained), checkpoint and export one model; return export/."""
    import torch
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from experiments.config.groups import CONF_DIR
    from experiments.export.bundle import export_model, rebuild

    overrides = [
        *MODELS[name],
        f"data.synthetic.sessions={sessions}",
        f"export.max_verify_samples={verify}",
        "paths.cache_dir=null",
        "logger=none",
    ]
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    OmegaConf.resolve(cfg)
    torch.manual_seed(0)
    module, data = rebuild(cfg)
    (folder / "checkpoints").mkdir(parents=True)
    torch.save({"state_dict": module.state_dict()}, folder / "checkpoints" / "last.ckpt")
    return export_model(cfg, module, data, folder)


def percentiles(fn, calls: int, warmup: int) -> dict[str, float]:
    """p50 / p99 / p99.9 of one call of ``fn``, microseconds."""
    for _ in range(warmup):
        fn()
    times = np.empty(calls, np.int64)
    clock = time.perf_counter_ns
    for i in range(calls):
        start = clock()
        fn()
        times[i] = clock() - start
    p50, p99, p999 = np.percentile(times, [50, 99, 99.9]) / 1e3
    return {"p50_us": float(p50), "p99_us": float(p99), "p99_9_us": float(p999)}


def numpy_mlp(bundle: Path):
    """A numpy forward of the PPO MLP (Linear-tanh-Linear-tanh-Linear, argmax) from the
    checkpoint's weights: the floor."""
    import torch

    meta = json.loads((bundle / "metadata.json").read_text())
    sd = torch.load(bundle / meta["checkpoint"], weights_only=True)["state_dict"]
    w = [sd[f"policy_net.trunk.encoder.{i}.weight"].numpy().T.copy() for i in (0, 2)]
    b = [sd[f"policy_net.trunk.encoder.{i}.bias"].numpy() for i in (0, 2)]
    wh, bh = sd["policy_net.head.weight"].numpy().T.copy(), sd["policy_net.head.bias"].numpy()

    def forward(x: np.ndarray):
        h = np.tanh(x @ w[0] + b[0])
        h = np.tanh(h @ w[1] + b[1])
        logits = h @ wh + bh
        return int(logits.argmax()), logits

    return forward


def latency_rows(name: str, bundle: Path, calls: int, warmup: int) -> list[dict]:
    """Every runtime's latency on one sample of ``bundle``."""
    import onnxruntime as ort
    import torch

    from experiments.inference import Forecaster, Policy

    torch.set_num_threads(1)
    meta = json.loads((bundle / "metadata.json").read_text())
    shapes = [tuple(i["shape"][1:]) for i in meta["formats"]["onnx"]["inputs"]]
    rng = np.random.default_rng(0)
    sample = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    batch1 = [s[None] for s in sample]
    tensors = [torch.from_numpy(a) for a in batch1]
    ts = torch.jit.load(str(bundle / "model.ts"))
    pt2 = torch.export.load(str(bundle / "model.pt2")).module()
    eager = _eager_wrapper(bundle, meta)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    session = ort.InferenceSession(
        str(bundle / "model.onnx"), opts, providers=["CPUExecutionProvider"]
    )
    names = [i.name for i in session.get_inputs()]
    feed = dict(zip(names, batch1, strict=False))

    def torch_call(m):
        def call():
            with torch.inference_mode():
                return m(*tensors)

        return call

    api = Policy if meta["kind"] == "agent" else Forecaster
    label = api.__name__ + ".load"
    on_ort = api.load(bundle, runtime="onnxruntime")
    on_ts = api.load(bundle, runtime="torchscript")
    runs = {
        "eager torch": torch_call(eager),
        "TorchScript": torch_call(ts),
        "torch.export (.pt2)": torch_call(pt2),
        "ONNX Runtime session.run": lambda: session.run(None, feed),
        f"{label} (onnxruntime)": lambda: on_ort(*sample),
        f"{label} (torchscript)": lambda: on_ts(*sample),
    }
    if name == "ppo":
        floor = numpy_mlp(bundle)
        runs["numpy MLP (floor)"] = lambda: floor(sample[0])
    rows = []
    for runtime, fn in runs.items():
        rows.append({"model": name, "runtime": runtime, **percentiles(fn, calls, warmup)})
    return rows


def _eager_wrapper(bundle: Path, meta: dict):
    """The eager inference wrapper with the bundle's weights, rebuilt from its config."""
    from omegaconf import OmegaConf

    from experiments.export.bundle import load_weights, rebuild

    cfg = OmegaConf.create(meta["config_yaml"])
    module, _ = rebuild(cfg)
    load_weights(module, bundle / meta["checkpoint"])
    return module.inference().wrapper.eval()


LOAD_PROBE = """
import json, resource, sys, time
import numpy as np
def rss_mb():
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM"):
                return int(line.split()[1]) / 1024
before = rss_mb()
start = time.perf_counter()
from experiments.inference import Forecaster, Policy
api = Policy if sys.argv[2] == "agent" else Forecaster
model = api.load(sys.argv[1], runtime=sys.argv[3])
shapes = [tuple(i["shape"][1:]) for i in model.metadata["formats"]["onnx"]["inputs"]]
model(*[np.zeros(s, np.float32) for s in shapes])
seconds = time.perf_counter() - start
print(json.dumps({"load_s": seconds, "peak_rss_mb": rss_mb() - before, "peak_total_mb": rss_mb()}))
"""


def load_rows(name: str, bundle: Path, kind: str) -> list[dict]:
    """Load time (import of the API + load + first call) and peak RSS growth, per runtime, each
    in a fresh process."""
    rows = []
    for runtime in ("onnxruntime", "torchscript"):
        out = subprocess.run(
            [sys.executable, "-c", LOAD_PROBE, str(bundle), kind, runtime],
            capture_output=True,
            text=True,
            cwd=ROOT,
            check=True,
        )
        rows.append(
            {"model": name, "runtime": runtime, **json.loads(out.stdout.strip().splitlines()[-1])}
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke run: 1,000 calls, small market")
    p.add_argument("--calls", type=int, default=10_000, help="timed calls per row")
    p.add_argument("--warmup", type=int, default=1_000, help="untimed calls before timing")
    p.add_argument("--json", type=Path, help="write the rows to this file")
    args = p.parse_args(argv)
    calls = 1_000 if args.quick else args.calls
    warmup = 200 if args.quick else args.warmup
    sessions = 40 if args.quick else 120
    rows, loads, sizes = [], [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in MODELS:
            bundle = build_bundle(name, Path(tmp) / name, sessions, 64 if args.quick else 512)
            kind = json.loads((bundle / "metadata.json").read_text())["kind"]
            sizes[name] = {f.name: f.stat().st_size for f in bundle.iterdir()}
            loads += load_rows(name, bundle, kind)
            rows += latency_rows(name, bundle, calls, warmup)
    print(f"\nsingle-sample latency, 1 thread, {calls:,} calls after {warmup:,} warm-up (us)")
    print(f"{'model':<6} {'runtime':<32} {'p50':>9} {'p99':>9} {'p99.9':>9}  target")
    for r in rows:
        target = TARGETS_US.get((r["model"], r["runtime"]))
        mark = (
            ""
            if target is None
            else f"p99 <= {target:g}: {'met' if r['p99_us'] <= target else 'MISSED'}"
        )
        print(
            f"{r['model']:<6} {r['runtime']:<32} {r['p50_us']:9.1f} {r['p99_us']:9.1f} {r['p99_9_us']:9.1f}  {mark}"
        )
    print("\nbundle load (fresh process: import, load, first call) and peak RSS growth")
    print(f"{'model':<6} {'runtime':<12} {'load s':>8} {'peak MB':>8}  target")
    for r in loads:
        ok = "met" if r["load_s"] < LOAD_TARGET_S else "MISSED"
        print(
            f"{r['model']:<6} {r['runtime']:<12} {r['load_s']:8.3f} {r['peak_rss_mb']:8.1f}  load < 1 s: {ok}"
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {
                    "calls": calls,
                    "warmup": warmup,
                    "latency": rows,
                    "load": loads,
                    "bundle_bytes": sizes,
                },
                indent=2,
            )
        )
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
