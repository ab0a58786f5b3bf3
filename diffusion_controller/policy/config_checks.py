"""Value checks for the policy config's dataclasses: each converts a value or raises naming it.

Kept apart from config.py so the dataclasses there read as what a policy is, while the one way
every field is checked (integers that are whole numbers, finite floats, real booleans, choices,
non-empty unique name lists, known and required keys) lives here. Every failure is a ValueError
"<field>: <problem>", because a config travels inside model artifacts and a wrong value must be
named before it reaches the arm. No torch, like config.py.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import fields
from typing import Any


def fail(where: str, msg: str) -> None:
    raise ValueError(f"{where}: {msg}")


def as_int(where: str, value: Any, lo: int | None = None, hi: int | None = None) -> int:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value != int(value)
    ):
        fail(where, f"expected an integer, got {value!r}")
    out = int(value)
    if lo is not None and out < lo:
        fail(where, f"must be >= {lo}, got {out}")
    if hi is not None and out > hi:
        fail(where, f"must be <= {hi}, got {out}")
    return out


def as_float(where: str, value: Any, lo: float | None = None, lo_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        fail(where, f"expected a number, got {value!r}")
    out = float(value)
    if not math.isfinite(out):
        fail(where, f"must be finite, got {out}")
    if lo is not None and (out <= lo if lo_open else out < lo):
        fail(where, f"must be {'>' if lo_open else '>='} {lo}, got {out}")
    return out


def as_bool(where: str, value: Any) -> bool:
    if not isinstance(value, bool):
        fail(where, f"expected true or false, got {value!r}")
    return bool(value)


def as_choice(where: str, value: Any, options: Sequence[str]) -> str:
    if value not in options:
        fail(where, f"must be one of {list(options)}, got {value!r}")
    return str(value)


def as_names(where: str, value: Any) -> list[str]:
    if isinstance(value, str) or not isinstance(value, Sequence) or len(value) == 0:
        fail(where, f"expected a non-empty list of names, got {value!r}")
    out = list(value)
    for name in out:
        if not isinstance(name, str) or not name:
            fail(where, f"every name must be a non-empty string, got {name!r}")
    dup = sorted({n for n in out if out.count(n) > 1})
    if dup:
        fail(where, f"duplicate names {dup}")
    return out


def check_keys(
    where: str, data: Mapping[str, Any], cls: type, strict: bool, optional: Sequence[str] = ()
) -> None:
    if not isinstance(data, Mapping):
        fail(where, f"expected a mapping, got {type(data).__name__}")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        fail(where, f"unknown keys {unknown} (known: {sorted(known)})")
    if strict:
        missing = sorted(known - set(data) - set(optional))
        if missing:
            fail(where, f"missing keys {missing}")
