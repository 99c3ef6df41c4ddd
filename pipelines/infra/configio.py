"""One way to build frozen config dataclasses from YAML plus ``key=value`` overrides.

Every command (``run``, ``train``, ``score``) and every engine uses these helpers, so a key is
validated once, the same way, wherever it comes from. Unknown keys and wrongly typed values raise
``ConfigError`` naming the dotted key; a message quotes at most ~200 characters of a value
(``errors.show``). YAML is read with ``safe_yaml``: expanding its aliases may not add more than
``MAX_ALIAS_VALUES`` values to a document (a "billion laughs" file is a few hundred bytes whose
expansion does not fit in memory; a long config written out is not limited).
"""
from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Mapping, Sequence, TypeVar

import yaml

from pipelines.infra.errors import SHOWN, ConfigError, clip, show

T = TypeVar("T")
MAX_ALIAS_VALUES = 100_000  # values that expanding a document's aliases may add to it


def safe_yaml(text: str, where: str):
    """``yaml.safe_load(text)``, refusing aliases that add more than ``MAX_ALIAS_VALUES`` values
    once expanded, and recursive ones. The node graph is composed first (an alias is a shared
    node there, so the graph is as small as the text) and counted before any Python object is
    built."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_expansion(node, where)
        return loader.construct_document(node)
    except RecursionError:  # thousands of nested [ or { (the composer recurses)
        raise ConfigError(f"{where}: nested too deeply") from None
    finally:
        loader.dispose()


def _check_expansion(root, where: str) -> None:
    """Count the values of ``root`` with its aliases expanded, without expanding them: one pass
    over the distinct nodes, each node's count memoized (iterative: no recursion limit; the
    counts of a bomb are big integers of a few dozen digits, cheap to add)."""
    size: dict[int, int] = {}  # id(node) -> values below it, itself included
    open_ = set()  # ids of the nodes on the current path (a node below itself: recursive)
    stack = [(root, False)]
    while stack:
        node, closing = stack.pop()
        key = id(node)
        if closing:
            open_.discard(key)
            size[key] = 1 + sum(size[id(k)] for k in _children(node))
            continue
        if key in size:
            continue
        if key in open_:
            raise ConfigError(f"{where}: a YAML alias refers to a node that contains it "
                              "(a recursive structure is not a config)")
        open_.add(key)
        stack.append((node, True))
        for kid in _children(node):
            if isinstance(kid, yaml.ScalarNode):
                size[id(kid)] = 1  # most nodes: no trip through the stack
            elif id(kid) not in size:
                stack.append((kid, False))
    if size[id(root)] - len(size) > MAX_ALIAS_VALUES:  # expanded minus written
        raise ConfigError(f"{where}: its YAML aliases expand to more than {MAX_ALIAS_VALUES:,} "
                          "values (an alias bomb?); write the values out, or use fewer aliases")


def _children(node) -> list:
    if isinstance(node, yaml.SequenceNode):
        return node.value
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def parse_overrides(overrides: Sequence[str]) -> dict:
    """``["a.b=1", "c=x,y"]`` -> nested dict; values are parsed as YAML scalars."""
    tree: dict = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {show(item)} is not of the form key=value")
        try:
            value = safe_yaml(raw, f"override {show(key.strip())}") if raw.strip() else ""
        except (yaml.YAMLError, ValueError) as exc:  # ValueError: an int of > 4,300 digits
            if isinstance(exc, ConfigError):
                raise
            value = raw
        node = tree
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {show(item)}: {show(part)} is not a section")
        node[parts[-1]] = value
    return tree


def deep_merge(base: Mapping, extra: Mapping) -> dict:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {show(str(path))} does not exist or is not a file")
    try:
        data = safe_yaml(path.read_text(encoding="utf-8"), f"config {show(str(path))}") or {}
    except ConfigError:
        raise
    except (OSError, UnicodeDecodeError, yaml.YAMLError, ValueError) as exc:
        # ValueError: an integer of more than 4,300 digits (Python's int() limit)
        raise ConfigError(f"cannot read config {show(str(path))}: {clip(str(exc), 2 * SHOWN)}"
                          ) from exc
    if not isinstance(data, dict):
        raise ConfigError(f"config {show(str(path))} must be a mapping at the top level")
    return data


def load_config(cls: type[T], path: str | Path | None = None, overrides: Sequence[str] = ()) -> T:
    """Build ``cls`` from an optional YAML file and dotted overrides (overrides win)."""
    data = read_yaml(path) if path is not None else {}
    return from_dict(cls, deep_merge(data, parse_overrides(overrides)))


def from_dict(cls: type[T], data: Mapping, prefix: str = "") -> T:
    """Recursively build a (frozen) dataclass, rejecting unknown keys and bad types."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{prefix or 'config'} must be a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields), key=str)
    if unknown:
        names = ", ".join(f"{prefix}{str(k)[:SHOWN]}" for k in unknown[:10]) + (
            f" (and {len(unknown) - 10:,} more)" if len(unknown) > 10 else "")
        raise ConfigError(f"unknown config key(s): {names} (known: {', '.join(sorted(fields))})")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _coerce(hints[name], value, f"{prefix}{name}")
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{prefix or 'config'}: {clip(str(exc), 2 * SHOWN)}") from exc


def _coerce(tp: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value if value is not None else {}, key + ".")
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{key}: bad value {show(value)}")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{key}: {show(value)} is not one of {', '.join(map(repr, args))}")
        return value
    if origin in (tuple, list):
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {show(value)}")
        inner = args[0] if args else Any
        return tuple(_coerce(inner, v, f"{key}[{i}]") for i, v in enumerate(value))
    if origin is dict or tp is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a mapping, got {show(value)}")
        return dict(value)
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true/false, got {show(value)}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {show(value)}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {show(value)}")
        return float(value)
    if tp is str:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{key}: expected a string, got {show(value)}")
        return "" if value is None else str(value)
    return value


def to_dict(config: Any) -> dict:
    """A plain, YAML/JSON-ready dict of a config dataclass (tuples become lists)."""

    def plain(v: Any) -> Any:
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(dataclasses.asdict(config))


def dump_yaml(config: Any) -> str:
    return yaml.safe_dump(to_dict(config), sort_keys=False)
