"""What an evaluation run depends on and reports besides its episodes: `EvalConfig` (the run's
settings, written to config.json), the controller's parameter file for a policy, the DDS domain
of the run, and what the record says about the models and the software versions.
"""

from __future__ import annotations

import math
import os
import platform
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from diffusion_controller.eval import paths
from diffusion_controller.eval.metrics import EpisodeResult
from diffusion_controller.eval.perturbations import PERTURBATIONS, refused_for
from diffusion_controller.settings.controller import SPECS
from diffusion_controller.sim.tasks import DEFAULT_TASK, TASK_NAMES

TRAINING_SEEDS = range(0, 300)  # the shipped demonstrations (data/demos) used these
Progress = Callable[[str], None]


@dataclass
class EvalConfig:
    """Everything a run depends on (written to config.json)."""

    task: str = DEFAULT_TASK  # sim/tasks.py: what sim_arm sets up and judges
    model: str | None = None  # None: the task's shipped diffusion model
    baseline: str | None = None  # None: the task's shipped regression model; "none": no baseline
    seeds: int = 10
    first_seed: int = 10000
    perturbations: list[str] = field(default_factory=lambda: ["none"])
    out: str | None = None  # None: runs/<prefix>-<timestamp>
    prefix: str = "eval"
    backend: str = "auto"
    # Sim seconds the policy gets per episode, from the enable; None: the task's own (reach 15 s,
    # pick_place 20 s), resolved when the run starts so that config.json records the number.
    timeout: float | None = None
    settle: float = 0.6  # sim seconds between the reset and the enable
    domain_id: int | None = None  # None: a free-looking one, never the operator's
    plots: bool = True
    sphere_margin: float = 0.005  # the controller's extra keep-out clearance (m)
    keepout_margin: float = 0.0  # growth of the obstacle's keep-out spheres (m)
    # Tell the safety filter where the obstacle is (its keep-out spheres). Off, only the policy's
    # camera knows: what a policy's own choices do, with no filter to rescue them.
    keepout: bool = True
    controller_params: dict[str, Any] = field(default_factory=dict)  # extra overrides
    startup_timeout: float = 180.0  # model load, warm-up (and ONNX export) of a controller
    # The simulated robot side (sim/robot_side.py): forward | trajectory; the controller's
    # `command_interface` follows it (position | trajectory).
    robot_controller: str = "trajectory"

    def validate(self) -> list[str]:
        out = []
        if self.seeds < 1:
            out.append("--seeds must be at least 1")
        if self.first_seed < 0:
            out.append("--first-seed must be >= 0")
        if self.timeout is not None and not (
            math.isfinite(self.timeout) and 0.5 <= self.timeout <= 600
        ):
            out.append("--timeout must be within [0.5, 600] s")
        if self.task not in TASK_NAMES:
            out.append(f"unknown task {self.task!r}; choose from {list(TASK_NAMES)}")
        unknown = [p for p in self.perturbations if p not in PERTURBATIONS]
        if unknown:
            out.append(f"unknown perturbations {unknown}; choose from {list(PERTURBATIONS)}")
        refused = [p for p in self.perturbations if p in refused_for(self.task)]
        if refused:
            out.append(f"perturbations {refused} do not apply to the {self.task} task")
        if self.domain_id is not None and not 0 <= self.domain_id <= 101:
            out.append("--domain-id must be within [0, 101]")
        if self.robot_controller not in ("forward", "trajectory", "ideal"):
            out.append(f"unknown robot controller {self.robot_controller!r}")
        if self.backend not in SPECS["backend"].choices:
            out.append(f"unknown backend {self.backend!r}")
        return out


@dataclass
class RunOutcome:
    out_dir: Path
    summary: dict[str, Any]
    results: list[EpisodeResult]
    table: list[dict[str, Any]]
    notes: list[str]


def pick_domain_id() -> int:
    """A DDS domain for the run: random in [1, 101], avoiding the environment's own domain."""
    avoid = os.environ.get("ROS_DOMAIN_ID", "0")
    rng = random.Random(os.getpid() ^ time.time_ns())
    while True:
        d = rng.randint(1, 101)
        if str(d) != avoid.strip():
            return d


def controller_params(model_dir: Path, cfg: EvalConfig) -> dict[str, Any]:
    """config/sim.yaml's parameters with the model and the evaluation's settings on top."""
    import yaml

    base: dict[str, Any] = {}
    found = paths.resource(paths.SIM_CONFIG)
    if found is not None:
        with open(found, encoding="utf-8") as fh:
            doc = yaml.safe_load(fh) or {}
        base = dict((doc.get("/**") or {}).get("ros__parameters") or {})
    base.update(
        {
            "model_path": str(model_dir),
            "backend": cfg.backend,
            "autostart": True,
            "inference_threads": 1,
            "diagnostics_rate": 5.0,
            "publish_markers": False,
            "sphere_margin": float(cfg.sphere_margin),
            "robot_description_timeout": 30.0,
            "command_interface": (
                "trajectory" if cfg.robot_controller == "trajectory" else "position"
            ),
        }
    )
    base.update(cfg.controller_params)
    base.pop("obstacles", None)  # set per episode through the parameter service
    return base


def model_facts(model_dir: Path) -> dict[str, Any]:
    """What the run's record says about a model (its config and training metadata)."""
    from diffusion_controller.policy.artifact import load_config

    try:
        cfg, _, meta = load_config(model_dir)
    except Exception as exc:  # reported, the controller will refuse it with its own reason
        return {"path": str(model_dir), "error": f"{type(exc).__name__}: {exc}"}
    out = {
        "path": str(model_dir),
        "kind": cfg.kind,
        "horizon": cfg.horizon,
        "action_dt": cfg.action_dt,
        "cameras": list(cfg.cameras),
        "gripper": cfg.gripper is not None,  # its actions drive a hand after the arm joints
    }
    for key in ("created", "package_version", "weights", "steps", "final_loss"):
        if key in meta:
            out[key] = meta[key]
    return out


def versions() -> dict[str, str]:
    """The versions a run's record names (package, Python, platform, libraries, ROS)."""
    from diffusion_controller import __version__

    out = {
        "diffusion_controller": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
    }
    for mod in ("numpy", "torch", "onnxruntime", "pybullet", "rclpy"):
        try:
            m = __import__(mod)
            out[mod] = str(getattr(m, "__version__", "installed"))
        except Exception:
            out[mod] = "absent"
    out["ros_distro"] = os.environ.get("ROS_DISTRO", "")
    return out
