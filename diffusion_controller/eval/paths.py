"""Where the shipped models and configuration files are, installed or in a source tree.

Looked up in order: the ROS package share directory (colcon install: share/diffusion_controller),
the Python prefix's share directory (pip install), then the source tree this module sits in.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

PACKAGE = "diffusion_controller"
DEFAULT_MODEL = "models/panda_reach_diffusion"
DEFAULT_BASELINE = "models/panda_reach_regression"
# Per task (sim/tasks.py): the shipped (policy, baseline) a run evaluates unless told otherwise.
TASK_MODELS: dict[str, tuple[str, str]] = {
    "panda_reach": (DEFAULT_MODEL, DEFAULT_BASELINE),
    "pick_place": ("models/pick_place_diffusion", "models/pick_place_regression"),
}
SIM_CONFIG = "config/sim.yaml"


def _roots() -> list[Path]:
    roots: list[Path] = []
    try:
        from ament_index_python.packages import get_package_share_directory

        roots.append(Path(get_package_share_directory(PACKAGE)))
    except Exception:  # not a ROS install, or the package is not in the ament index
        pass
    roots.append(Path(sys.prefix) / "share" / PACKAGE)
    roots.append(Path(__file__).resolve().parents[2])
    return roots


def task_models(task: str) -> tuple[str, str]:
    """(shipped policy, shipped baseline) of `task`, relative to the roots."""
    if task not in TASK_MODELS:
        raise ValueError(f"no shipped models for task {task!r}; known: {list(TASK_MODELS)}")
    return TASK_MODELS[task]


def resource(relative: str) -> Path | None:
    """The first existing `relative` path under the roots, or None."""
    for root in _roots():
        path = root / relative
        if path.exists():
            return path
    return None


def resolve_model(value: str | os.PathLike[str] | None, default: str) -> tuple[Path | None, str]:
    """(path, note): an explicit directory as given, else the shipped default if present.

    The note says what was looked for when nothing was found, so a missing model reads as a
    clear message rather than a configure failure in another process.
    """
    if value is not None and str(value) != "":
        path = Path(value).expanduser()
        if not path.is_dir():
            return None, f"model directory {path} does not exist"
        if not (path / "config.json").is_file():
            return None, f"{path} is not a model artifact (no config.json)"
        return path.resolve(), ""
    found = resource(default)
    if found is None:
        where = ", ".join(str(r / default) for r in _roots())
        return None, f"shipped model {default} not found (looked in {where})"
    return found.resolve(), ""
