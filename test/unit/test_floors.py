"""setup.py's lower bounds are the versions the floor tier tests (.ci/floors.txt), no others."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# pyyaml's declared floor (5.4, Ubuntu 22.04's) has no CPython 3.11 wheel: the tier checks 6.0.
CHECKED_ABOVE_FLOOR = {"pyyaml"}


def _floors_txt() -> dict[str, str]:
    pins = {}
    for line in (ROOT / ".ci" / "floors.txt").read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = line.split("==")
            pins[name.lower()] = version
    return pins


def _setup_floors() -> dict[str, str]:
    text = (ROOT / "setup.py").read_text(encoding="utf-8")
    block = text[text.index("install_requires=["):]
    block = block[: block.index("]")]
    return {m.group(1).lower(): m.group(2) for m in re.finditer(r'"([A-Za-z0-9_.-]+)>=([^"]+)"',
                                                                block)}


def test_every_core_floor_is_pinned_in_the_floor_tier() -> None:
    floors, pins = _setup_floors(), _floors_txt()
    assert set(floors) == set(pins)
    for name, version in floors.items():
        if name not in CHECKED_ABOVE_FLOOR:
            assert pins[name] == version, name


def test_jetson_doc_states_the_same_floors() -> None:
    doc = (ROOT / "docs" / "jetson.md").read_text(encoding="utf-8")
    for name, version in _setup_floors().items():
        assert f"{name}>={version}" in doc, name
