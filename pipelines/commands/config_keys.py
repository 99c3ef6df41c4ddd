"""Every key of a config model with its default, for a command's ``--help``: read from the frozen
dataclasses themselves, so the help names no key, default or choice the model does not have.

``key=default``, or ``key=default|other|...`` where the choices are fixed (a ``Literal``, or a
registry's names given in ``choices``); a section (a nested dataclass) is one paragraph, wrapped.
Values are written as an override takes them (``true``, ``[]``, ``""``).
"""
from __future__ import annotations

import dataclasses
import textwrap
import typing
from typing import Mapping

WIDTH = 96


def config_keys(cls, choices: Mapping[str, tuple] | None = None, width: int = WIDTH) -> str:
    """The keys of the config dataclass ``cls``: its sections, then its plain keys."""
    choices = choices or {}
    hints = typing.get_type_hints(cls)
    parts = []  # (section header or "", its keys), in the model's order
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            sub = typing.get_type_hints(hints[f.name])
            parts.append((f"{f.name}:", [_item(g, sub[g.name], f"{f.name}.{g.name}", choices)
                                         for g in dataclasses.fields(hints[f.name])]))
        else:
            parts.append(("", [_item(f, hints[f.name], f.name, choices)]))
    indent = 4 + max(len(head) for head, _ in parts)
    return "\n".join(_wrap(f"  {head:<{indent - 2}}" if head else "  ", items,
                            indent if head else 2, width) for head, items in parts)


def _item(f: dataclasses.Field, tp, key: str, choices: Mapping[str, tuple]) -> str:
    default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
    fixed = choices.get(key) or (typing.get_args(tp) if typing.get_origin(tp) is
                                 typing.Literal else ())
    others = [c for c in fixed if c != default]
    return f"{f.name}={'|'.join(map(_value, [default, *others]))}"


def _value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (tuple, list)):
        return f"[{','.join(map(_value, v))}]"
    if isinstance(v, str):
        return v if v and " " not in v else f'"{v}"'
    return str(v)


def _wrap(head: str, items: list[str], indent: int, width: int) -> str:
    return textwrap.fill("  ".join(items), width, initial_indent=head,
                         subsequent_indent=" " * indent, break_long_words=False,
                         break_on_hyphens=False)
