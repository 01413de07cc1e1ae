"""Read what a ``_target_`` accepts from its source code, without importing it.

The run checks its config before torch, Lightning or the data are touched, so it cannot import
the plug-ins it is about to check (most of them import torch). Instead this module finds a
target's source file the way Python's import system would (without executing any of it),
parses it, and follows ``from x import y`` re-exports and base classes to the class or
function: its parameters, their annotations and defaults, and whether it is a dataclass.
It also tells whether a module is *light*: importing it does not import torch, Lightning,
TorchRL or W&B (through our own modules too), so the checker may import it to run the
``__post_init__`` checks of its config dataclasses.

Anything it cannot read statically (a C extension, a module ``__getattr__``, a name assigned
at runtime) is "opaque": it exists, and its parameters are not checked.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import sys
from dataclasses import dataclass, field
from pathlib import Path

HEAVY = frozenset(
    {
        "torch",
        "pytorch_lightning",
        "lightning",
        "lightning_fabric",
        "torchrl",
        "tensordict",
        "torchmetrics",
        "onnx",
        "onnxruntime",
        "onnxscript",
        "wandb",
    }
)
FOLLOW_DEPTH = 8  # re-exports and base classes followed before giving up (opaque)


class UnknownTarget(LookupError):
    """A ``_target_`` whose module or attribute does not exist; the message says which."""


@dataclass(frozen=True)
class SourceModule:
    """A module found on disk: its dotted name, file, parsed tree and package flag."""

    name: str
    path: Path
    tree: ast.Module
    is_package: bool

    @functools.cached_property
    def defined(self) -> list[str]:
        """Public top-level classes and functions (for "did you mean" messages)."""
        return [
            n.name
            for n in self.tree.body
            if isinstance(n, ast.ClassDef | ast.FunctionDef) and not n.name.startswith("_")
        ]


@dataclass(frozen=True)
class Symbol:
    """A name found in a module: a class or function definition, or something opaque."""

    module: SourceModule | None
    node: ast.AST | None
    qualname: str

    @property
    def is_class(self) -> bool:
        return isinstance(self.node, ast.ClassDef)

    @property
    def is_function(self) -> bool:
        return isinstance(self.node, ast.FunctionDef | ast.AsyncFunctionDef)

    @property
    def is_module(self) -> bool:
        return isinstance(self.node, ast.Module)

    @property
    def opaque(self) -> bool:
        return self.module is None or not (self.is_class or self.is_function or self.is_module)


@dataclass(frozen=True)
class Param:
    """One parameter (or dataclass field): its annotation (an AST node, or None), whether it
    has a default, and the module its annotation's names are looked up in."""

    name: str
    annotation: ast.expr | None
    has_default: bool
    module: SourceModule


@dataclass(frozen=True)
class Signature:
    """What a target accepts. ``params`` by name, in order; ``var_kwargs``: it takes
    ``**kwargs`` (any key is accepted); ``dataclass``: the target is a dataclass."""

    params: dict[str, Param] = field(default_factory=dict)
    var_kwargs: bool = False
    dataclass: bool = False

    @property
    def required(self) -> list[str]:
        return [p.name for p in self.params.values() if not p.has_default]


# ------------------------------------------------------------------------------ modules
@functools.cache
def find_module(name: str) -> SourceModule | None:
    """The module ``name`` as source on disk, found without importing it or its packages
    (None when there is no such module, or it has no Python source)."""
    parts = name.split(".")
    try:
        spec = importlib.util.find_spec(parts[0])  # a top-level name: nothing is imported
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    path = Path(spec.origin) if spec.origin and spec.origin not in ("built-in", "frozen") else None
    locations = list(spec.submodule_search_locations or [])
    is_package = bool(locations)
    for part in parts[1:]:
        path, next_locations = None, []
        for location in locations:
            folder = Path(location) / part
            if (folder / "__init__.py").is_file():
                path, next_locations = folder / "__init__.py", [str(folder)]
                break
            if (Path(location) / f"{part}.py").is_file():
                path = Path(location) / f"{part}.py"
                break
            if folder.is_dir():  # a namespace package
                next_locations.append(str(folder))
        if path is None and not next_locations:
            return None
        locations, is_package = next_locations, bool(next_locations)
    if path is None or path.suffix != ".py":
        return None
    return _parse(name, str(path), is_package)


@functools.cache
def _parse(name: str, path: str, is_package: bool) -> SourceModule | None:
    try:
        tree = ast.parse(Path(path).read_text(encoding="utf-8"), filename=path)
    except (OSError, SyntaxError, UnicodeDecodeError):
        return None
    return SourceModule(name, Path(path), tree, is_package)


def _absolute(module: SourceModule, node: ast.ImportFrom) -> str:
    """The absolute module name of ``from <node.module> import ...`` inside ``module``."""
    if not node.level:
        return node.module or ""
    package = module.name if module.is_package else module.name.rpartition(".")[0]
    base = package.split(".")
    if node.level > 1:
        base = base[: len(base) - node.level + 1]
    return ".".join([*base, *([node.module] if node.module else [])])


def _top_level(tree: ast.Module):
    """Top-level statements, looking into ``if``/``try`` blocks but not ``if TYPE_CHECKING``."""
    for node in tree.body:
        if isinstance(node, ast.If):
            if _is_type_checking(node.test):
                continue
            yield from node.body
            yield from node.orelse
        elif isinstance(node, ast.Try):
            yield from node.body
            for handler in node.handlers:
                yield from handler.body
        else:
            yield node


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def find_symbol(module: SourceModule, name: str, depth: int = 0) -> Symbol | None:
    """``name`` in ``module``: its definition, following ``from x import name`` re-exports;
    a submodule of a package; an opaque symbol for assignments, ``import`` aliases and
    modules with ``__getattr__``; None if it is not there."""
    qualname = f"{module.name}.{name}"
    if depth > FOLLOW_DEPTH:
        return Symbol(None, None, qualname)
    found: Symbol | None = None
    for node in _top_level(module.tree):
        if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            if node.name == name:
                found = Symbol(module, node, qualname)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == name for t in targets):
                found = Symbol(None, None, qualname)
        elif isinstance(node, ast.ImportFrom):
            for alias in node.names:
                if (alias.asname or alias.name) == name:
                    source = _absolute(module, node)
                    target = find_module(source)
                    if target is None:
                        found = Symbol(None, None, qualname)
                        continue
                    inner = find_symbol(target, alias.name, depth + 1)
                    sub = find_module(f"{source}.{alias.name}")
                    found = inner or (_module_symbol(sub) if sub else Symbol(None, None, qualname))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if (alias.asname or alias.name.split(".")[0]) == name:
                    found = Symbol(None, None, qualname)
    if found is not None:
        return found
    if module.is_package:
        sub = find_module(f"{module.name}.{name}")
        if sub is not None:
            return _module_symbol(sub)
    if any(isinstance(n, ast.FunctionDef) and n.name == "__getattr__" for n in module.tree.body):
        return Symbol(None, None, qualname)
    return None


def _module_symbol(module: SourceModule) -> Symbol:
    return Symbol(module, module.tree, module.name)


def resolve_target(path: str) -> Symbol:
    """The class or function a ``_target_`` string names; :class:`UnknownTarget` with what is
    missing and what exists nearby."""
    import difflib

    parts = str(path).split(".")
    if len(parts) < 2 or not all(p.isidentifier() for p in parts):
        raise UnknownTarget(
            f"'{path}' is not a dotted path to a class or function (package.module.Name)."
        )
    for i in range(len(parts) - 1, 0, -1):
        module = find_module(".".join(parts[:i]))
        if module is None:
            continue
        symbol: Symbol | None = _module_symbol(module)
        for attr in parts[i:]:
            symbol = _attribute(symbol, attr)
            if symbol is None:
                where = ".".join(parts[:i])
                names = module.defined
                close = difflib.get_close_matches(attr, names, n=3)
                hint = f" Did you mean {', '.join(close)}?" if close else ""
                listing = f" It defines {', '.join(names[:12])}." if names else ""
                raise UnknownTarget(f"{where} has no '{attr}'.{hint}{listing}")
            if symbol.opaque:
                return symbol
        if symbol.is_module:
            raise UnknownTarget(f"'{path}' is a module; name a class or function in it.")
        return symbol
    top = parts[0]
    hint = (
        " Is its package installed, or on PYTHONPATH (a package of your own: add its folder to "
        "PYTHONPATH)?"
    )
    raise UnknownTarget(f"no module named '{'.'.join(parts[:-1])}' (from '{top}').{hint}")


def _attribute(symbol: Symbol, attr: str) -> Symbol | None:
    if symbol.opaque:
        return symbol
    if symbol.is_module:
        return find_symbol(symbol.module, attr)
    if symbol.is_class:
        for node in symbol.node.body:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == attr:
                return Symbol(symbol.module, node, f"{symbol.qualname}.{attr}")
        return Symbol(None, None, f"{symbol.qualname}.{attr}")  # inherited or assigned
    return None


# ------------------------------------------------------------------------------ signatures
def signature(symbol: Symbol) -> Signature | None:
    """What ``symbol`` accepts when called, or None when that cannot be read statically."""
    if symbol.opaque:
        return None
    if symbol.is_function:
        is_method = "." in symbol.qualname[len(symbol.module.name) + 1 :]
        return _function_signature(symbol.node, symbol.module, skip_first=is_method)
    if symbol.is_class:
        return _class_signature(symbol, 0)
    return None


def _function_signature(node, module: SourceModule, skip_first: bool) -> Signature:
    args = node.args
    positional = [*args.posonlyargs, *args.args]
    if skip_first and positional:
        positional = positional[1:]
    defaults = [None] * (len([*args.posonlyargs, *args.args]) - len(args.defaults)) + list(
        args.defaults
    )
    if skip_first and defaults:
        defaults = defaults[1:]
    params: dict[str, Param] = {}
    for arg, default in zip(positional, defaults, strict=True):
        params[arg.arg] = Param(arg.arg, arg.annotation, default is not None, module)
    for arg, default in zip(args.kwonlyargs, args.kw_defaults, strict=True):
        params[arg.arg] = Param(arg.arg, arg.annotation, default is not None, module)
    return Signature(params, var_kwargs=args.kwarg is not None)


def _is_dataclass(node: ast.ClassDef) -> bool:
    for deco in node.decorator_list:
        target = deco.func if isinstance(deco, ast.Call) else deco
        name = target.attr if isinstance(target, ast.Attribute) else getattr(target, "id", "")
        if name == "dataclass":
            return True
    return False


def _is_classvar(annotation: ast.expr) -> bool:
    node = annotation.value if isinstance(annotation, ast.Subscript) else annotation
    if isinstance(annotation, ast.Constant) and isinstance(annotation.value, str):
        return annotation.value.startswith(("ClassVar", "typing.ClassVar"))
    name = node.attr if isinstance(node, ast.Attribute) else getattr(node, "id", "")
    return name == "ClassVar"


def class_bases(symbol: Symbol) -> list[Symbol | None]:
    """The base classes of a class symbol (None where a base cannot be resolved)."""
    out: list[Symbol | None] = []
    for base in symbol.node.bases:
        out.append(resolve_expr(base, symbol.module))
    return out


def _class_signature(symbol: Symbol, depth: int) -> Signature | None:
    if depth > FOLLOW_DEPTH:
        return None
    node: ast.ClassDef = symbol.node
    for item in node.body:
        if isinstance(item, ast.FunctionDef) and item.name == "__init__":
            return _function_signature(item, symbol.module, skip_first=True)
    if _is_dataclass(node):
        params: dict[str, Param] = {}
        for base in reversed(class_bases(symbol)):
            if base is not None and base.is_class:
                inherited = _class_signature(base, depth + 1)
                if inherited is not None and inherited.dataclass:
                    params.update(inherited.params)
        for item in node.body:
            if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                if _is_classvar(item.annotation):
                    continue
                name = item.target.id
                params[name] = Param(name, item.annotation, item.value is not None, symbol.module)
        return Signature(params, var_kwargs=False, dataclass=True)
    for base in class_bases(symbol):
        if base is None or base.opaque:
            return None
        if base.is_class:
            found = _class_signature(base, depth + 1)
            if found is not None or base.qualname.endswith(".object"):
                return found
            return None
    return Signature({})  # no base: object() takes no arguments


def resolve_expr(node: ast.expr, module: SourceModule) -> Symbol | None:
    """The symbol a name or ``a.b.c`` expression in ``module`` refers to (None if unknown)."""
    chain: list[str] = []
    while isinstance(node, ast.Attribute):
        chain.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    symbol = find_symbol(module, node.id)
    if symbol is None:
        symbol = _import_alias(module, node.id)
    for attr in reversed(chain):
        if symbol is None:
            return None
        symbol = _attribute(symbol, attr)
    return symbol


def _import_alias(module: SourceModule, name: str) -> Symbol | None:
    """``import a.b as name`` / ``import name``: the module it names, when it has source."""
    for node in _top_level(module.tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname == name:
                    sub = find_module(alias.name)
                    return _module_symbol(sub) if sub else None
                if alias.asname is None and alias.name.split(".")[0] == name:
                    sub = find_module(name)
                    return _module_symbol(sub) if sub else None
    return None


# ------------------------------------------------------------------------------ lightness
@functools.cache
def heavy_import(name: str) -> str | None:
    """The first heavy package (torch, Lightning, ...) that importing module ``name`` would
    import, following its top-level imports (and its packages') through project modules;
    None if it is light. Imports under ``if TYPE_CHECKING:`` and inside functions do not
    count."""
    return _heavy(name, frozenset())


def _heavy(name: str, seen: frozenset[str]) -> str | None:
    if name.split(".")[0] in HEAVY:
        return name.split(".")[0]
    if name in seen:
        return None
    seen = seen | {name}
    parts = name.split(".")
    for i in range(1, len(parts)):  # importing a.b.c runs a/__init__ and a/b/__init__
        found = _heavy_of(".".join(parts[:i]), seen)
        if found:
            return found
    return _heavy_of(name, seen)


def _heavy_of(name: str, seen: frozenset[str]) -> str | None:
    if name.split(".")[0] in sys.stdlib_module_names:
        return None
    module = find_module(name)
    if module is None or {"site-packages", "dist-packages"} & set(module.path.parts):
        return None  # an installed third-party module outside the heavy set: not followed
    for node in _top_level(module.tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(module, node)
            names = [base] + [
                f"{base}.{a.name}" for a in node.names if find_module(f"{base}.{a.name}")
            ]
        for imported in names:
            if imported.split(".")[0] in HEAVY:
                return imported.split(".")[0]
            if imported and imported != name:
                found = _heavy(imported, seen)
                if found:
                    return found
    return None


def class_constant(symbol: Symbol, name: str, depth: int = 0):
    """The literal value assigned to ``name`` in a class body (or its bases'), e.g. a family's
    ``lengths = {"frames": ...}``; None when absent or not a literal."""
    if symbol is None or not symbol.is_class or depth > FOLLOW_DEPTH:
        return None
    for node in symbol.node.body:
        targets = []
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
        if any(isinstance(t, ast.Name) and t.id == name for t in targets):
            try:
                return ast.literal_eval(value)
            except ValueError:
                return None
    for base in class_bases(symbol):
        found = class_constant(base, name, depth + 1)
        if found is not None:
            return found
    return None
