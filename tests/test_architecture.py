"""The shape of the code: layers import only down, no import circle anywhere in src/, nothing in
experiments/ names a model family, the inference API is light, and the config schemas are
importable without torch (the config check builds them before anything heavy)."""

from __future__ import annotations

import ast
import io
import re
import subprocess
import sys
import tokenize
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
# hydra_plugins: Hydra takes sweepers only from that package; it sits above experiments.
LAYERS = ["datamodules", "envs", "modules", "experiments", "hydra_plugins"]
# A family name as a word of its own (``transformer-engine``, a Lightning precision, is not one).
FAMILY_NAMES = re.compile(r"(?<![\w-])(ppo|dqn|lstm|transformer|a2c)(?![\w-])", re.IGNORECASE)


def modules_of(package: str = "") -> dict[str, Path]:
    out = {}
    for path in (SRC / package).rglob("*.py"):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def imports_of(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """Our modules that ``name`` imports anywhere in its file (functions included)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            targets = [base] + [f"{base}.{a.name}" for a in node.names]
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name and not name.startswith(target + "."):
                found.add(target)
    return found


def test_no_layer_imports_a_layer_above_it():
    known = modules_of()
    rank = {layer: i for i, layer in enumerate(LAYERS)}
    upward = [
        f"{name} imports {other}"
        for name, path in known.items()
        for other in imports_of(name, path, known)
        if rank[other.split(".")[0]] > rank[name.split(".")[0]]
    ]
    assert not upward


def test_no_import_circle_in_src():
    known = modules_of()
    edges = {name: imports_of(name, path, known) for name, path in known.items()}
    circles: list[str] = []
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                circles.append(" -> ".join([*stack[stack.index(nxt) :], nxt]))
            elif not state.get(nxt):
                visit(nxt, stack)
        stack.pop()
        state[node] = 2

    for name in sorted(known):
        if not state.get(name):
            visit(name, [])
    assert not circles


def test_nothing_in_experiments_names_a_model_family_or_switches_on_a_kind():
    offenders = []
    for path in (SRC / "experiments").rglob("*.py"):
        text = path.read_text()
        for token in tokenize.generate_tokens(io.StringIO(text).readline):
            named = FAMILY_NAMES.search(token.string)
            if token.type in (tokenize.NAME, tokenize.STRING, tokenize.COMMENT) and named:
                offenders.append(f"{path.relative_to(SRC)}:{token.start[0]}: {token.string!r}")
        for pattern in (r"\bkind\s*==", r"\balgorithm\s*==", r"\.kind\b", r"\.algorithm\b"):
            for match in re.finditer(pattern, text):
                line = text[: match.start()].count("\n") + 1
                offenders.append(f"{path.relative_to(SRC)}:{line}: {match.group()}")
    assert not offenders, "\n".join(offenders)


def _imported_by(statement: str) -> set[str]:
    script = f"import sys\n{statement}\nprint(' '.join(sorted(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return set(done.stdout.split())


def test_the_inference_api_imports_neither_lightning_nor_hydra_nor_torch():
    loaded = _imported_by("from experiments.inference import Forecaster, Policy")
    heavy = {"pytorch_lightning", "lightning", "hydra", "omegaconf", "torch", "torchrl", "wandb"}
    assert not heavy & {m.split(".")[0] for m in loaded}


def test_config_schemas_are_light_so_the_check_can_build_them():
    loaded = _imported_by(
        "import modules.agents.config, modules.forecasters.config, envs.frictions, "
        "envs.risk, envs.episode, envs.rewards, envs.factory, datamodules.sources, "
        "experiments.config.schema, experiments.config.job, experiments.run.entry, "
        "experiments.config.sweep, experiments.curriculum.compose"
    )
    heavy = {"torch", "pytorch_lightning", "lightning", "torchrl", "tensordict", "wandb"}
    assert not heavy & {m.split(".")[0] for m in loaded}
