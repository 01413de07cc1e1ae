"""Annotations (as read from source by :mod:`experiments.config.targets`) turned into checks of
config values: ``int``, ``float | None``, ``Literal["auto"]``, ``tuple[int, ...]``,
``Mapping[str, str]``, a dataclass (a nested config section), or a class built by ``_target_``.
Bounds of plain numbers are written as ``Annotated`` metadata strings, ``Annotated[int, ">= 1"]``
(read here from source; Python ignores them at run time), so even the parameters of a
``_partial_`` plug-in the check cannot build are range-checked.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass

from experiments.config.targets import SourceModule, Symbol, resolve_expr

PRIMITIVES = {"int", "float", "str", "bool", "bytes", "complex"}
ANY = {"Any", "object", "type", "Type", "TypeVar", "Hashable"}
SEQUENCES = {
    "list",
    "tuple",
    "set",
    "frozenset",
    "List",
    "Tuple",
    "Set",
    "FrozenSet",
    "Sequence",
    "MutableSequence",
    "Iterable",
    "Collection",
}
MAPPINGS = {"dict", "Dict", "Mapping", "MutableMapping", "OrderedDict", "DefaultDict"}
CALLABLES = {"Callable"}
WRAPPERS = {"Annotated", "Final", "ClassVar", "Required", "NotRequired"}


@dataclass(frozen=True)
class TypeSpec:
    """A check of a config value. ``form``: any | none | int | float | str | bool | bytes |
    complex | literal | union | list | mapping | dataclass | target. ``args``: element specs
    (union members, list items, mapping values); ``choices``: a Literal's values; ``symbol``:
    the dataclass, or the class a ``_target_`` should build."""

    form: str
    args: tuple[TypeSpec, ...] = ()
    choices: tuple = ()
    symbol: Symbol | None = None
    bounds: tuple[tuple[str, float], ...] = ()  # (">=", 1.0): from Annotated[int, ">= 1"]

    def describe(self) -> str:
        if self.bounds:
            limits = " and ".join(f"{op} {value:g}" for op, value in self.bounds)
            return (
                f"{TypeSpec(self.form, self.args, self.choices, self.symbol).describe()} {limits}"
            )
        form = self.form
        if form == "union":
            return " or ".join(dict.fromkeys(a.describe() for a in self.args))
        if form == "literal":
            return "one of " + ", ".join(repr(c) for c in self.choices)
        if form == "list":
            inner = self.args[0].describe() if self.args and self.args[0].form != "any" else ""
            return f"a list of {inner}" if inner else "a list"
        if form == "mapping":
            return "a mapping (key: value)"
        if form == "dataclass":
            return f"a section of {self.symbol.qualname.rsplit('.', 1)[-1]} settings"
        if form == "target":
            built = self.symbol.qualname.rsplit(".", 1)[-1] if self.symbol else "an object"
            return f"a config with a _target_ (building {built})"
        return {
            "int": "a whole number",
            "float": "a number",
            "str": "text",
            "bool": "true or false",
            "none": "null",
            "any": "anything",
        }.get(form, form)


ANY_SPEC = TypeSpec("any")


def spec_of(annotation: ast.expr | None, module: SourceModule | None, depth: int = 0) -> TypeSpec:
    """The check an annotation asks for (anything that cannot be read is ``any``)."""
    if annotation is None or module is None or depth > 6:
        return ANY_SPEC
    node = annotation
    if isinstance(node, ast.Constant):
        if node.value is None:
            return TypeSpec("none")
        if isinstance(node.value, str):
            try:
                return spec_of(ast.parse(node.value, mode="eval").body, module, depth + 1)
            except SyntaxError:
                return ANY_SPEC
        return ANY_SPEC
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return _union(spec_of(node.left, module, depth + 1), spec_of(node.right, module, depth + 1))
    if isinstance(node, ast.Subscript):
        return _subscript(node, module, depth)
    name = _name(node)
    if name == "None":
        return TypeSpec("none")
    if name in PRIMITIVES:
        return TypeSpec(name)
    if name in ANY:
        return ANY_SPEC
    if name in SEQUENCES:
        return TypeSpec("list", (ANY_SPEC,))
    if name in MAPPINGS:
        return TypeSpec("mapping", (ANY_SPEC,))
    if name in CALLABLES:
        return TypeSpec("target")
    symbol = resolve_expr(node, module) if isinstance(node, ast.Name | ast.Attribute) else None
    if symbol is None or symbol.opaque or not symbol.is_class:
        return ANY_SPEC
    from experiments.config.targets import signature

    sig = signature(symbol)
    if sig is not None and sig.dataclass:
        return TypeSpec("dataclass", symbol=symbol)
    return TypeSpec("target", symbol=symbol)


def _name(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return ""


def _union(*specs: TypeSpec) -> TypeSpec:
    members: list[TypeSpec] = []
    for spec in specs:
        members.extend(spec.args if spec.form == "union" else [spec])
    if any(m.form == "any" for m in members):
        return ANY_SPEC
    return TypeSpec("union", tuple(members))


def _subscript(node: ast.Subscript, module: SourceModule, depth: int) -> TypeSpec:
    name = _name(node.value)
    items = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
    if name == "Optional":
        return _union(spec_of(items[0], module, depth + 1), TypeSpec("none"))
    if name == "Union":
        return _union(*(spec_of(i, module, depth + 1) for i in items))
    if name == "Literal":
        try:
            return TypeSpec("literal", choices=tuple(ast.literal_eval(i) for i in items))
        except ValueError:
            return ANY_SPEC
    if name == "Annotated":
        inner = spec_of(items[0], module, depth + 1)
        bounds = tuple(b for item in items[1:] for b in _bounds(item))
        return TypeSpec(inner.form, inner.args, inner.choices, inner.symbol, bounds)
    if name in WRAPPERS:
        return spec_of(items[0], module, depth + 1)
    if name in SEQUENCES:
        inner = items[0] if items and not _is_ellipsis(items[0]) else None
        if name in ("tuple", "Tuple") and len(items) > 1 and not _is_ellipsis(items[1]):
            inner = None  # a fixed-size tuple of mixed types: check it is a list only
        return TypeSpec("list", (spec_of(inner, module, depth + 1) if inner else ANY_SPEC,))
    if name in MAPPINGS:
        value = items[-1] if len(items) == 2 else None
        return TypeSpec("mapping", (spec_of(value, module, depth + 1) if value else ANY_SPEC,))
    if name in CALLABLES:
        return TypeSpec("target")
    if name in ("type", "Type"):
        return ANY_SPEC
    return spec_of(node.value, module, depth + 1)


BOUND = re.compile(r"^\s*(>=|>|<=|<)\s*(-?[0-9.eE+-]+)\s*$")
COMPARE = {
    ">=": lambda v, b: v >= b,
    ">": lambda v, b: v > b,
    "<=": lambda v, b: v <= b,
    "<": lambda v, b: v < b,
}


def _bounds(node: ast.expr) -> list[tuple[str, float]]:
    """Bounds written as ``Annotated`` metadata strings: ``">= 1"``, ``"> 0"``."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        match = BOUND.match(node.value)
        if match:
            try:
                return [(match[1], float(match[2]))]
            except ValueError:
                return []
    return []


def _is_ellipsis(node: ast.expr) -> bool:
    return isinstance(node, ast.Constant) and node.value is Ellipsis


def matches(value, spec: TypeSpec) -> bool:
    """Whether ``value`` (plain YAML data: dict, list, str, int, float, bool, None) is of
    ``spec`` at the top level (sections and targets are checked further by the walker)."""
    form = spec.form
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if number and not all(COMPARE[op](value, bound) for op, bound in spec.bounds):
        return False
    if form == "any":
        return True
    if form == "none":
        return value is None
    if form == "bool":
        return isinstance(value, bool)
    if form == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if form in ("float", "complex"):
        return isinstance(value, int | float) and not isinstance(value, bool)
    if form in ("str", "bytes"):
        return isinstance(value, str)
    if form == "literal":
        return any(value == c and type(value) is type(c) for c in spec.choices)
    if form == "union":
        return any(matches(value, member) for member in spec.args)
    if form == "list":
        return isinstance(value, list | tuple) and all(matches(v, spec.args[0]) for v in value)
    if form == "mapping":
        return isinstance(value, dict) and all(matches(v, spec.args[0]) for v in value.values())
    if form == "dataclass":
        return isinstance(value, dict)
    if form == "target":
        return isinstance(value, dict) and "_target_" in value
    return True


def dataclass_member(spec: TypeSpec) -> TypeSpec | None:
    """The dataclass a section of ``spec`` is checked against (a union naming a dataclass and
    a mapping means "a mapping that becomes that dataclass")."""
    if spec.form == "dataclass":
        return spec
    if spec.form == "union":
        found = [m for m in spec.args if m.form == "dataclass"]
        return found[0] if len(found) == 1 else None
    return None
