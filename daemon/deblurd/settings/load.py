"""Load the config: a TOML file, then ``DEBLURD_`` environment overrides, then the strict models.

Every problem is reported with the dotted key path it concerns (``fusion.mode``,
``decision.ring_frames[2].frames``) and the offending value, all of them at once, in a
``ConfigError`` whose ``problems`` lists ``(key_path, message)`` pairs (``key_path`` is
``""`` for a problem with the file as a whole).

Environment overrides: ``DEBLURD_<SECTION>__<KEY>[__<KEY>...]=<value>``, names matched
case-insensitively. The value is read as a TOML literal when it is one (``0.4``, ``true``,
``[1, 2]``, ``{ max_blur = 0.3, frames = 4 }``), else as JSON (``null`` unsets an optional
key), else it is the string itself; a key that accepts only strings always gets the string.
An override wins over the file. When an override switches the ``type`` of a tagged table
(``DEBLURD_INFERENCE__RUNTIME__TYPE=tensorrt``), the file's keys in that table that the new
variant does not have are dropped (they belonged to the variant the file chose). Every
``DEBLURD_`` variable except ``RESERVED_ENV_VARS`` is an override: one that names no key is
an error, so a typo never goes unnoticed.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import sys
import tomllib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from deblurd.errors import ConfigError
from deblurd.settings.base import Shape, field_shape
from deblurd.settings.docs import toml_literal
from deblurd.settings.models import DeblurdSettings

EX_CONFIG = 78
"""Exit status for an invalid configuration (sysexits.h ``EX_CONFIG``)."""

ENV_PREFIX = "DEBLURD_"
ENV_NESTING = "__"
RESERVED_ENV_VARS = frozenset({"DEBLURD_CONFIG"})
"""``DEBLURD_`` variables that are not key overrides (left to the command line)."""

_ROOT = Shape("table", DeblurdSettings, model=DeblurdSettings)
_TOML_POSITION = re.compile(r"\s*\(at (?:line (\d+), column (\d+)|end of document)\)$")

Problem = tuple[str, str]
KeyPath = tuple[str | int, ...]


def load_settings(
    path: str | Path | None = None, env: Mapping[str, str] | None = None
) -> DeblurdSettings:
    """Read ``path`` (TOML; ``None``: no file, defaults), apply ``DEBLURD_`` overrides from
    ``env`` (``None``: ``os.environ``), validate. Raises ``ConfigError`` listing every problem.
    """
    source = str(path) if path is not None else "<defaults>"
    data = _read_toml(Path(path)) if path is not None else {}
    overrides, problems = _env_overrides(os.environ if env is None else env)
    _fill_tags(data, _ROOT)
    _drop_other_variant_keys(data, overrides)
    for override in sorted(overrides, key=lambda o: len(o.path)):
        _set(data, override.path, override.value)
    _fill_tags(data, _ROOT)
    try:
        settings = DeblurdSettings.model_validate(data)
    except ValidationError as exc:
        problems += [_describe(err, overrides) for err in exc.errors()]
        raise ConfigError(_summary(source, problems), problems) from exc
    if problems:
        raise ConfigError(_summary(source, problems), problems)
    return settings


def check_config(path: str | Path, env: Mapping[str, str] | None = None) -> int:
    """``deblurd check-config PATH``: print ``OK: PATH`` and return 0, or print each problem
    as ``PATH: key.path: message`` on stderr and return ``EX_CONFIG``. The environment's
    ``DEBLURD_`` overrides are checked too (``env``; ``None``: ``os.environ``)."""
    try:
        load_settings(path, env)
    except ConfigError as exc:
        for key, message in exc.problems or [("", str(exc))]:
            print(f"{path}: {key}: {message}" if key else f"{path}: {message}", file=sys.stderr)
        return EX_CONFIG
    print(f"OK: {path}")
    return 0


def _summary(source: str, problems: Sequence[Problem]) -> str:
    count = f"{len(problems)} problem{'s' if len(problems) != 1 else ''}"
    lines = [f"{source}: {k}: {m}" if k else f"{source}: {m}" for k, m in problems]
    return f"invalid configuration ({count}):\n" + "\n".join(lines)


# --------------------------------------------------------------------------- the file


def _read_toml(path: Path) -> dict[str, Any]:
    def fail(message: str) -> ConfigError:
        return ConfigError(f"{path}: {message}", [("", message)])

    try:
        raw = path.read_bytes()
    except FileNotFoundError as exc:
        raise fail("config file not found") from exc
    except OSError as exc:
        raise fail(f"cannot read config file: {exc.strerror or exc}") from exc
    try:
        text = raw.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise fail(f"not UTF-8 text (byte 0x{raw[exc.start]:02x} on line {line})") from exc
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        reason = str(exc)
        match = _TOML_POSITION.search(reason)
        lines = text.splitlines() or [""]
        if match and match.group(1):
            line, column = int(match.group(1)), int(match.group(2))
        else:  # "at end of document"
            line, column = len(lines), len(lines[-1]) + 1
        reason = reason[: match.start()] if match else reason
        source_line = lines[line - 1].strip() if 0 < line <= len(lines) else ""
        where = f"line {line}, column {column}"
        shown = f" (in: {source_line})" if source_line else ""
        raise fail(f"invalid TOML at {where}: {reason}{shown}") from exc


# --------------------------------------------------------------------------- the environment


@dataclass(frozen=True)
class _Target:
    """The key a ``DEBLURD_`` variable names: its path and shape (``union``: see below)."""

    path: tuple[str, ...]
    shape: Shape
    union: Shape | None


@dataclass(frozen=True)
class _Override:
    """One ``DEBLURD_`` variable: the key path it sets and its parsed value."""

    variable: str
    path: tuple[str, ...]
    value: Any
    union: Shape | None  # the tagged table's shape when the key is that table's tag


def _env_overrides(env: Mapping[str, str]) -> tuple[list[_Override], list[Problem]]:
    overrides: dict[tuple[str, ...], _Override] = {}
    problems: list[Problem] = []
    for variable in sorted(env):
        upper = variable.upper()
        if not upper.startswith(ENV_PREFIX) or upper in RESERVED_ENV_VARS:
            continue
        segments = [s.lower() for s in variable[len(ENV_PREFIX) :].split(ENV_NESTING)]
        target = _resolve_env(variable, segments)
        if not isinstance(target, _Target):
            problems.append(target)
            continue
        value = _parse_env_value(env[variable], target.shape)
        override = _Override(variable, target.path, value, target.union)
        earlier = overrides.get(override.path)
        if earlier is not None and earlier.value != override.value:
            problems.append((
                _dotted(override.path),
                f"set differently by environment variables {earlier.variable} and {variable}",
            ))  # fmt: skip
        overrides[override.path] = override
    return list(overrides.values()), problems


def _resolve_env(variable: str, segments: Sequence[str]) -> _Target | Problem:
    """The key a variable names, or the problem with its name."""
    shape = _ROOT
    path: list[str] = []
    union: Shape | None = None
    if not all(segments):
        return ("", f"environment variable {variable} names no key (empty part in the name)")
    for segment in segments:
        fields = _table_fields(shape)
        if fields is None:
            return (
                _dotted(path),
                f"is not a table, so environment variable {variable} cannot set "
                f"'{segment}' inside it (set the whole value instead)",
            )
        name = next((n for n in fields if n.lower() == segment), None)
        if name is None:
            unknown = _dotted([*path, segment])
            hint = _suggest(variable.upper(), [_env_name(k) for k in _known_keys(_ROOT)])
            return (
                unknown,
                f"unknown key '{unknown}' (from environment variable {variable}"
                + (f"; did you mean {hint}?)" if hint else ")"),
            )
        union = shape if shape.kind == "union" and name == shape.discriminator else None
        path.append(name)
        shape = field_shape(fields[name])
    return _Target(tuple(path), shape, union)


def _table_fields(shape: Shape) -> dict[str, Any] | None:
    """The keys of a table (of every variant, for a tagged table); None for a non-table."""
    if shape.kind == "table" and shape.model is not None:
        return dict(shape.model.model_fields)
    if shape.kind == "union":
        fields: dict[str, Any] = {}
        for variant in shape.variants.values():
            for name, info in variant.model_fields.items():
                fields.setdefault(name, info)
        return fields
    return None


def _parse_env_value(raw: str, shape: Shape) -> Any:
    """A TOML literal, else JSON, else the string; the string itself for string-only keys."""
    if shape.text_only:
        return raw
    text = raw.strip()
    try:
        parsed = tomllib.loads(f"value = {text}")
        if parsed.keys() == {"value"}:
            return parsed["value"]
    except tomllib.TOMLDecodeError:
        pass
    try:
        return json.loads(text)
    except ValueError:
        return raw


def _env_name(path: Sequence[str]) -> str:
    return ENV_PREFIX + ENV_NESTING.join(p.upper() for p in path)


# --------------------------------------------------------------------------- merging


def _set(data: dict[str, Any], path: Sequence[str], value: Any) -> None:
    """Set ``data[a][b]... = value``; tables are merged key by key into existing tables."""
    node = data
    for key in path[:-1]:
        if not isinstance(node.get(key), dict):
            node[key] = {}
        node = node[key]
    old = node.get(path[-1])
    if isinstance(old, dict) and isinstance(value, dict):
        for key, sub in value.items():
            _set(old, [key], sub)
    else:
        node[path[-1]] = value


def _get(data: Any, path: Sequence[str]) -> Any:
    for key in path:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data


def _fill_tags(data: Any, shape: Shape) -> None:
    """Give each tagged table without its tag the tag of the key's default (so that
    ``[inference.runtime]`` with only ``threads = 2`` tunes the default runtime)."""
    if not isinstance(data, dict) or shape.model is None:
        return
    for name, info in shape.model.model_fields.items():
        sub, sub_shape = data.get(name), field_shape(info)
        if not isinstance(sub, dict):
            if sub_shape.kind == "array" and sub_shape.item is not None and isinstance(sub, list):
                for item in sub:
                    _fill_tags(item, _concrete(item, sub_shape.item))
            continue
        if sub_shape.kind == "union" and sub_shape.discriminator not in sub:
            default = None if info.is_required() else info.get_default(call_default_factory=True)
            tag = getattr(default, sub_shape.discriminator or "", None)
            if isinstance(tag, str):
                sub[sub_shape.discriminator or ""] = tag
        _fill_tags(sub, _concrete(sub, sub_shape))


def _concrete(data: Any, shape: Shape) -> Shape:
    """For a tagged table, the shape of the variant ``data`` names; else ``shape``."""
    if shape.kind == "union" and isinstance(data, dict):
        variant = shape.variants.get(str(data.get(shape.discriminator or "")))
        if variant is not None:
            return Shape("table", variant, model=variant)
    return shape


def _drop_other_variant_keys(data: dict[str, Any], overrides: Sequence[_Override]) -> None:
    """An override that switches a tagged table's variant drops the file's keys in that
    table which the new variant does not have."""
    for override in overrides:
        union = override.union
        table = _get(data, override.path[:-1])
        if union is None or not isinstance(table, dict):
            continue
        variant = union.variants.get(str(override.value))
        if variant is None or table.get(override.path[-1]) == override.value:
            continue
        for key in [k for k in table if k not in variant.model_fields]:
            del table[key]


# --------------------------------------------------------------------------- error reports


def _describe(err: ErrorDetails, overrides: Sequence[_Override]) -> Problem:
    """A pydantic error as ``(key.path, message)`` in the config file's terms."""
    kind, value, ctx = err["type"], err.get("input"), err.get("ctx") or {}
    where = _locate(err["loc"])
    path, shape = where.path, where.shape
    if kind == "extra_forbidden":
        message = _unknown_key(where)
    elif kind == "missing":
        message = "required key is missing"
    elif kind in ("union_tag_invalid", "union_tag_not_found") and shape is not None:
        disc = shape.discriminator or "type"
        path = (*path, disc)
        tags = ", ".join(toml_literal(t) for t in shape.variants)
        tag = value.get(disc) if isinstance(value, dict) else None
        got = f", got {_show(tag)}" if tag is not None else " (the key is missing)"
        message = f"expected one of {tags}{got}"
    elif kind in ("model_type", "model_attributes_type", "dict_type"):
        message = f"expected a table, got {_show(value, with_type=True)}"
    elif kind in ("list_type", "tuple_type", "set_type"):
        message = f"expected an array, got {_show(value, with_type=True)}"
    elif kind == "literal_error" and shape is not None and shape.literals:
        allowed = ", ".join(toml_literal(v) for v in shape.literals)
        message = f"expected one of {allowed}, got {_show(value)}"
    elif kind in ("value_error", "assertion_error"):
        message = str(ctx.get("error", err["msg"]))
        head, sep, rest = message.partition(": ")
        fields = shape.model.model_fields if shape is not None and shape.model else {}
        if sep and head in fields:  # "ring_frames: rows must be sorted by max_blur"
            path, message = (*path, head), rest
    else:
        message = err["msg"]
        if message.startswith("Input should be "):
            message = "should be " + message.removeprefix("Input should be ")
        with_type = kind.endswith(("_type", "_parsing"))
        message = f"{message}, got {_show(value, with_type=with_type)}"
    dotted = _dotted(path)
    source = _env_source(dotted, overrides)
    return dotted, message + (f" (from environment variable {source})" if source else "")


@dataclass(frozen=True)
class _Where:
    """Where an error points: its key path (variant tags taken out), the shape of the key,
    the shape of the table holding it, and the tagged table and tag it went through last."""

    path: KeyPath
    shape: Shape | None
    parent: Shape | None
    union: Shape | None = None
    tag: str = ""


def _locate(loc: Sequence[str | int]) -> _Where:
    shape: Shape | None = _ROOT
    parent: Shape | None = None
    union: Shape | None = None
    tag = ""
    path: list[str | int] = []
    for element in loc:
        if shape is not None and shape.kind == "union" and element in shape.variants:
            union, tag = shape, str(element)
            shape = Shape("table", shape.variants[tag], model=shape.variants[tag])
            continue
        parent = shape
        path.append(element)
        if isinstance(element, int):
            shape = shape.item if shape is not None and shape.kind == "array" else None
        elif shape is not None and shape.model is not None and element in shape.model.model_fields:
            shape = field_shape(shape.model.model_fields[element])
        else:
            shape = None
    return _Where(tuple(path), shape, parent, union, tag)


def _unknown_key(where: _Where) -> str:
    path, parent, union = where.path, where.parent, where.union
    dotted = _dotted(path)
    key = str(path[-1]) if path else ""
    known = list(parent.model.model_fields) if parent is not None and parent.model else []
    if union is not None and len(path) >= 2 and where.parent is not None:
        owners = [t for t, v in union.variants.items() if key in v.model_fields]
        if owners:
            disc = union.discriminator or "type"
            return (
                f"unknown key '{dotted}' for {disc} = {toml_literal(where.tag)} (only "
                + " or ".join(f"{disc} = {toml_literal(t)}" for t in owners)
                + " has it)"
            )
    message = f"unknown key '{dotted}'"
    near = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    if near:
        return f"{message} (did you mean '{_dotted([*path[:-1], near[0]])}'?)"
    elsewhere = [_dotted(k) for k in _known_keys(_ROOT) if k[-1] == key]
    if elsewhere:
        return f"{message} (it belongs in '{elsewhere[0]}')"
    return message


def _known_keys(shape: Shape, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Every key path reachable through tables (and every variant of tagged tables)."""
    for name, info in (_table_fields(shape) or {}).items():
        yield (*prefix, name)
        yield from _known_keys(field_shape(info), (*prefix, name))


def _suggest(word: str, candidates: Sequence[str]) -> str | None:
    near = difflib.get_close_matches(word, candidates, n=1, cutoff=0.75)
    return near[0] if near else None


def _env_source(dotted: str, overrides: Sequence[_Override]) -> str | None:
    """The variable that set the key (or a table above it), if one did."""
    for override in overrides:
        set_path = _dotted(override.path)
        if dotted == set_path or dotted.startswith((set_path + ".", set_path + "[")):
            return override.variable
    return None


def _show(value: Any, with_type: bool = False) -> str:
    """A value as it would be written in TOML (shortened), optionally with its TOML type."""
    if isinstance(value, dict):
        return "a table"
    if value is None:
        return "null"
    try:
        text = toml_literal(value)
    except ValueError:
        text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{text} ({_toml_type(value)})" if with_type else text


def _toml_type(value: Any) -> str:
    for tp, name in ((bool, "a boolean"), (int, "an integer"), (float, "a float"),
                     (str, "a string"), (list, "an array"), (dict, "a table")):  # fmt: skip
        if isinstance(value, tp):
            return name
    return type(value).__name__


def _dotted(path: Sequence[str | int]) -> str:
    """``("decision", "ring_frames", 2, "frames")`` -> ``decision.ring_frames[2].frames``."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out
