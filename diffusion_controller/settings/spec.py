"""What a setting is (ParamSpec) and what every table of them can do: check, default, render, load.

A table is a tuple of ParamSpec. Everything about a setting, its name, type, default, range, unit,
description and when a change applies, is written in its ParamSpec and nowhere else: the ROS
declarations (ros/params.py), the checks, the core's config objects (control/assembly.py builds
them; their fields carry the settings' names) and docs/parameters.md are all derived from it.

Imports nothing of the package, so every layer (control, runtime, ros, sim, benches) can use it.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

# Parameter kinds, named as the ROS parameter types they become.
BOOL = "bool"
INT = "integer"
DOUBLE = "double"
STRING = "string"
DOUBLE_ARRAY = "double_array"
STRING_ARRAY = "string_array"
SCALAR_KINDS = (BOOL, INT, DOUBLE, STRING)

# When a change takes effect.
LIVE = "live"  # applied to the running core at once
ON_CONFIGURE = "configure"  # stored; used by the next configure transition
ON_RESET = "reset"  # stored; used by the next reset (sim_arm's episode settings)
READ_ONLY = "read-only"  # fixed at start-up (parameter file or command line)
WHEN = (LIVE, ON_CONFIGURE, ON_RESET, READ_ONLY)


@dataclass(frozen=True)
class ParamSpec:
    """One setting: its type, default, documentation, admissible values and when it applies."""

    name: str
    kind: str
    default: Any
    description: str
    when: str = ON_CONFIGURE
    min: float | None = None
    max: float | None = None
    choices: tuple[str, ...] = ()
    unit: str = ""
    group: str = ""

    @property
    def read_only(self) -> bool:
        return self.when == READ_ONLY

    @property
    def live(self) -> bool:
        return self.when == LIVE

    def range_text(self) -> str:
        if self.choices:
            return " | ".join(c if c else '""' for c in self.choices)
        if self.min is not None or self.max is not None:
            lo = "-inf" if self.min is None else _num(self.min)
            hi = "inf" if self.max is None else _num(self.max)
            return f"[{lo}, {hi}]"
        return ""


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(float(x))


def by_name(table: Iterable[ParamSpec]) -> dict[str, ParamSpec]:
    return {p.name: p for p in table}


def copy_value(value: Any) -> Any:
    return list(value) if isinstance(value, (list, tuple)) else value


def defaults_of(table: Iterable[ParamSpec]) -> dict[str, Any]:
    """Every setting of `table` at its default (fresh lists, safe to change)."""
    return {p.name: copy_value(p.default) for p in table}


def type_ok(spec: ParamSpec, value: Any) -> bool:
    if spec.kind == BOOL:
        return isinstance(value, bool)
    if spec.kind == INT:
        return isinstance(value, int) and not isinstance(value, bool)
    if spec.kind == DOUBLE:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if spec.kind == STRING:
        return isinstance(value, str)
    if spec.kind == DOUBLE_ARRAY:
        return isinstance(value, Sequence) and not isinstance(value, str) and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in value
        )
    if spec.kind == STRING_ARRAY:
        return isinstance(value, Sequence) and not isinstance(value, str) and all(
            isinstance(v, str) for v in value
        )
    return False


def check(spec: ParamSpec, value: Any) -> str | None:
    """Why `value` is not admissible for `spec` on its own (type, finite, range, choices)."""
    name = spec.name
    if not type_ok(spec, value):
        return f"{name}: expected {spec.kind}, got {type(value).__name__} {value!r}"
    if spec.kind in (INT, DOUBLE):
        x = float(value)
        if not math.isfinite(x):
            return f"{name}: {value!r} is not finite"
        if spec.min is not None and x < spec.min:
            return f"{name}: {value!r} is below the minimum {_num(spec.min)}"
        if spec.max is not None and x > spec.max:
            return f"{name}: {value!r} is above the maximum {_num(spec.max)}"
    if spec.choices and value not in spec.choices:
        return f"{name}: {value!r} is not one of {', '.join(spec.choices)}"
    if spec.kind == DOUBLE_ARRAY and not all(math.isfinite(float(v)) for v in value):
        return f"{name}: contains NaN or Inf"
    return None


def coerce(spec: ParamSpec, value: Any) -> Any:
    """A value as the core takes it: ints for a double become floats, arrays become lists."""
    if spec.kind == DOUBLE and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if spec.kind in (DOUBLE_ARRAY, STRING_ARRAY):
        return [] if value is None else list(value)
    return value


def check_fields(obj: Any, specs: Mapping[str, ParamSpec]) -> None:
    """Check every scalar field of the dataclass `obj` that is a setting against its spec.

    This is how the core's config objects take their ranges from the table instead of restating
    them: a field named as a setting is admissible exactly when the setting's value would be.
    None (a check switched off, which only the core knows) and numpy scalars are let through to
    the plain check. Raises ValueError naming the class, the field and why."""
    for f in dataclasses.fields(obj):
        spec = specs.get(f.name)
        value = getattr(obj, f.name)
        if spec is None or spec.kind not in SCALAR_KINDS or value is None:
            continue
        if isinstance(value, bool):
            pass
        elif spec.kind == DOUBLE and isinstance(value, numbers.Real):
            value = float(value)
        elif spec.kind == INT and isinstance(value, numbers.Integral):
            value = int(value)
        why = check(spec, value)
        if why is not None:
            raise ValueError(f"{type(obj).__name__}.{why}")


def build(cls: type, values: Mapping[str, Any], specs: Mapping[str, ParamSpec],
          convert: Mapping[str, Callable[[Any], Any]] | None = None, **extra: Any) -> Any:
    """The dataclass `cls` with every field that is a setting taken from `values` (coerced by
    its kind, or by `convert[name]` where the core holds it in another form) and the rest from
    `extra` (or the field's own default). A setting passed in `extra` is refused: settings reach
    the core only as values, under their own names."""
    convert = convert or {}
    named = [f.name for f in dataclasses.fields(cls) if f.name in specs]
    clash = sorted(set(extra) & set(named))
    if clash:
        raise TypeError(f"{cls.__name__}: settings {clash} come from the values, not as extras")
    kw = {name: (convert[name](values[name]) if name in convert
                 else coerce(specs[name], values[name])) for name in named}
    return cls(**kw, **extra)


def read_param_file(path: str, specs: Mapping[str, ParamSpec], node: str) -> dict[str, Any]:
    """The settings a ROS parameter file gives node `node` (its `/**` section and its own, as
    `--ros-args --params-file` applies them), coerced; no rclpy needed.

    Raises ValueError for a key the table does not have."""
    import yaml

    with open(path, encoding="utf-8") as fh:
        doc = yaml.safe_load(fh) or {}
    out: dict[str, Any] = {}
    for section in ("/**", node, "/" + node):
        part = (doc.get(section) or {}).get("ros__parameters") or {}
        for name, value in part.items():
            if name not in specs:
                raise ValueError(f"{path}: unknown parameter '{name}'")
            out[name] = coerce(specs[name], value)
    return out


# --- documentation --------------------------------------------------------------------------


def default_text(spec: ParamSpec) -> str:
    d = spec.default
    if isinstance(d, bool):
        return "true" if d else "false"
    if isinstance(d, str):
        return f'`"{d}"`'
    if isinstance(d, (list, tuple)):
        return "`[" + ", ".join(f'"{x}"' if isinstance(x, str) else _num(x) for x in d) + "]`"
    return f"`{d!r}`"


def markdown_tables(table: Sequence[ParamSpec], level: str = "##") -> list[str]:
    """One markdown table per group of `table`, in the table's order."""
    lines: list[str] = []
    groups: list[str] = []
    for p in table:
        if p.group not in groups:
            groups.append(p.group)
    for group in groups:
        lines += [f"{level} {group}", ""]
        lines += ["| name | type | default | range | unit | when | description |"]
        lines += ["| --- | --- | --- | --- | --- | --- | --- |"]
        for p in table:
            if p.group != group:
                continue
            lines.append(
                f"| `{p.name}` | {p.kind} | {default_text(p)} | {p.range_text()} | {p.unit} "
                f"| {p.when} | {p.description.replace('|', '/')} |"
            )
        lines.append("")
    return lines


def yaml_defaults(table: Sequence[ParamSpec], section: str = "/**") -> str:
    """A complete parameter file with every default (a starting point for a deployment's file)."""
    out = [f"{section}:", "  ros__parameters:"]
    for p in table:
        d = p.default
        if isinstance(d, bool):
            text = "true" if d else "false"
        elif isinstance(d, str):
            text = f'"{d}"'
        elif isinstance(d, (list, tuple)):
            if not d:  # rcl's YAML parser rejects empty sequences: leave the default in place
                out.append(f"    # {p.name}: []")
                continue
            text = "[" + ", ".join(f'"{x}"' if isinstance(x, str) else repr(x) for x in d) + "]"
        else:
            text = repr(d)
        out.append(f"    {p.name}: {text}")
    return "\n".join(out) + "\n"
