"""config/*.yaml carry only what their deployment changes: every key is a setting of the node the
section is for, no value equals the table's default, and the whole set is admissible.

(config/ros2_control/ holds ros2_control's own files, another format: not checked here. A file
without a `ros__parameters` section is a data spec for `train --spec` / `data inspect` and is
checked as one.)"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from diffusion_controller.settings import checks, sim
from diffusion_controller.settings import controller as table
from diffusion_controller.settings.spec import ParamSpec, coerce

ROOT = Path(__file__).resolve().parents[2]
ALL_FILES = sorted((ROOT / "config").glob("*.yaml"))


def _is_param_file(path: Path) -> bool:
    doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    return any(isinstance(v, dict) and "ros__parameters" in v for v in doc.values())


FILES = [p for p in ALL_FILES if _is_param_file(p)]
SPEC_FILES = [p for p in ALL_FILES if not _is_param_file(p)]
# Which table a section of a parameter file is checked against (`/**` reaches every node, and
# the package's files are the controller's).
SECTIONS: dict[str, tuple[dict[str, ParamSpec], str]] = {
    "/**": (table.SPECS, "diffusion_controller"),
    "diffusion_controller": (table.SPECS, "diffusion_controller"),
    "/diffusion_controller": (table.SPECS, "diffusion_controller"),
    sim.NODE_NAME: (sim.SIM_SPECS, sim.NODE_NAME),
    "/" + sim.NODE_NAME: (sim.SIM_SPECS, sim.NODE_NAME),
}


def problems(doc: dict) -> list[str]:
    """Why a parameter file does not carry only deployment changes (empty when it does)."""
    out: list[str] = []
    for section, body in (doc or {}).items():
        if section not in SECTIONS:
            out.append(f"section {section!r} is for no node of this package")
            continue
        specs, node = SECTIONS[section]
        for name, value in ((body or {}).get("ros__parameters") or {}).items():
            spec = specs.get(name)
            if spec is None:
                out.append(f"{section}: unknown parameter {name!r} (not a {node} setting)")
            elif coerce(spec, value) == coerce(spec, spec.default):
                out.append(f"{section}: {name} is {value!r}, its default: drop it")
    return out


def test_the_config_files_are_found() -> None:
    assert {f.name for f in FILES} >= {"arm.yaml", "sim.yaml"}


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_config_file_carries_only_changes(path: Path) -> None:
    assert problems(yaml.safe_load(path.read_text(encoding="utf-8"))) == []
    checks.load_param_file(str(path))  # and the whole set is admissible (raises if not)


@pytest.mark.parametrize("path", SPEC_FILES, ids=lambda p: p.name)
def test_data_spec_files_load(path: Path) -> None:
    from diffusion_controller.data.spec import load_spec

    load_spec(str(path))  # raises, naming the key, on anything a data spec does not take


def test_the_check_catches_unknown_keys_and_defaults() -> None:
    doc = {"/**": {"ros__parameters": {"velocity_scale": 0.5, "blend_window": 0.2,
                                       "control_rate_hz": 100, "ddim_steps": 4}},
           "sim_arm": {"ros__parameters": {"rate_hz": 100.0, "seed": 3}},
           "camera": {"ros__parameters": {"fps": 30}}}
    found = problems(doc)
    assert any("velocity_scale is 0.5, its default" in p for p in found)
    assert any("control_rate_hz is 100, its default" in p for p in found)  # 100 == 100.0
    assert any("unknown parameter 'blend_window'" in p for p in found)
    assert any("sim_arm: rate_hz is 100.0, its default" in p for p in found)
    assert any("'camera' is for no node" in p for p in found)
    assert len(found) == 5, found  # ddim_steps 4 and seed 3 are changes
