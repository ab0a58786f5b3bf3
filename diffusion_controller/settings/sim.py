"""The simulated arm's (`sim_arm`) settings, declared the same way as the controller's.

sim/sim_node.py declares this table on the node through ros/params.py, checks start-up values and
changes with `validate` / `check_update` here, and the perturbation (sim/perturbation.py) takes its
defaults and ranges from it; docs/parameters.md has a section generated from it. Topic defaults are
relative, so a namespace moves them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from diffusion_controller.settings.panda import PANDA_JOINT_NAMES
from diffusion_controller.settings.spec import (
    BOOL,
    DOUBLE,
    DOUBLE_ARRAY,
    INT,
    ON_RESET,
    READ_ONLY,
    STRING,
    STRING_ARRAY,
    ParamSpec,
    by_name,
    check,
    defaults_of,
)

NODE_NAME = "sim_arm"
ROBOT_CONTROLLERS = ("ideal", "forward", "trajectory")
MAX_OBSTACLE_SHIFT = 0.2  # metres: beyond this the task is a different task, not a perturbed one
# the tasks of sim/tasks.py's registry, named here so that settings/ imports nothing of sim/ (a
# folder cycle otherwise); test_settings checks that the two agree
TASK_NAMES = ("panda_reach", "pick_place")


def _p(name: str, kind: str, default: Any, description: str, **kw: Any) -> ParamSpec:
    kw.setdefault("when", READ_ONLY)
    return ParamSpec(name, kind, default, description, **kw)


SIM_PARAMS: tuple[ParamSpec, ...] = (
    # --- episode --------------------------------------------------------------------------------
    _p("seed", INT, 0, "Task seed used by the next ~/reset (and at start-up); changing it alone "
       "does not reset.", when=ON_RESET, min=0, max=2**31 - 1, group="sim_arm: episode"),
    _p("episode_timeout", DOUBLE, 0.0, "Task timeout (0: the task's own; otherwise at least "
       "0.5 s).", when=ON_RESET, min=0.0, max=3600.0, unit="s", group="sim_arm: episode"),
    # --- physics and sensors --------------------------------------------------------------------
    _p("joint_names", STRING_ARRAY, list(PANDA_JOINT_NAMES), "Order of the 7 positions in a "
       "command message (a permutation of the arm's joints).", group="sim_arm: physics"),
    _p("rate_hz", DOUBLE, 100.0, "Physics tick and /joint_states rate.", min=50.0, max=1000.0,
       unit="Hz", group="sim_arm: physics"),
    _p("timestep", DOUBLE, 1.0 / 500.0, "Physics step; each tick runs whole steps (at most one "
       "tick).", min=1e-4, max=0.01, unit="s", group="sim_arm: physics"),
    _p("real_time_factor", DOUBLE, 1.0, "Sim seconds per wall second.", min=0.1, max=20.0,
       group="sim_arm: physics"),
    _p("publish_clock", BOOL, False, "Publish /clock and stamp with sim time.",
       group="sim_arm: physics"),
    _p("camera_rate_hz", DOUBLE, 15.0, "Camera rate.", min=0.5, max=60.0, unit="Hz",
       group="sim_arm: physics"),
    _p("image_width", INT, 96, "Camera image width.", min=8, max=1024, unit="px",
       group="sim_arm: physics"),
    _p("image_height", INT, 96, "Camera image height.", min=8, max=1024, unit="px",
       group="sim_arm: physics"),
    _p("camera_frame_id", STRING, "camera_optical_frame", "frame_id of the images.",
       group="sim_arm: physics"),
    _p("contacts_rate_hz", DOUBLE, 10.0, "Rate of the contacts and verdict reports.", min=0.5,
       max=100.0, unit="Hz", group="sim_arm: physics"),
    # --- topics ---------------------------------------------------------------------------------
    _p("joint_states_topic", STRING, "joint_states", "JointState output.",
       group="sim_arm: topics"),
    _p("image_topic", STRING, "camera/image_raw", "Image output (rgb8).", group="sim_arm: topics"),
    _p("robot_description_topic", STRING, "robot_description", "URDF output (transient local).",
       group="sim_arm: topics"),
    _p("command_topic", STRING, "forward_position_controller/commands", "Float64MultiArray "
       "position command input.", group="sim_arm: topics"),
    _p("task_topic", STRING, "sim/task", "TaskSpec JSON output (transient local).",
       group="sim_arm: topics"),
    _p("contacts_topic", STRING, "sim/contacts", "Contacts and task verdict JSON output.",
       group="sim_arm: topics"),
    # --- robot side -----------------------------------------------------------------------------
    _p("robot_controller", STRING, "ideal", "Robot side: ideal (each command tracked as is), "
       "forward (a forward command controller, FR3 limits checked at 1 kHz) or trajectory "
       "(joint_trajectory_controller, open loop, FR3 limits checked at 1 kHz).",
       choices=ROBOT_CONTROLLERS, group="sim_arm: robot side"),
    _p("trajectory_topic", STRING, "joint_trajectory_controller/joint_trajectory",
       "JointTrajectory input when `robot_controller` is trajectory.",
       group="sim_arm: robot side"),
    _p("cmd_timeout", DOUBLE, 0.5, "Trajectory controller: hold after this long without a "
       "message.", min=0.0, max=60.0, unit="s", group="sim_arm: robot side"),
    _p("reflex_topic", STRING, "~/reflex", "Reflex reports (std_msgs/String JSON).",
       group="sim_arm: robot side"),
    # --- perturbations (sim/perturbation.py), applied at the next ~/reset -----------------------
    _p("image_delay", DOUBLE, 0.0, "Camera frames published this late, stamped when taken.",
       when=ON_RESET, min=0.0, max=1.0, unit="s", group="sim_arm: perturbations"),
    _p("joint_state_delay", DOUBLE, 0.0, "Joint states published this late, stamped when taken.",
       when=ON_RESET, min=0.0, max=0.5, unit="s", group="sim_arm: perturbations"),
    _p("image_noise", DOUBLE, 0.0, "Gaussian pixel noise std (intensity levels, clipped).",
       when=ON_RESET, min=0.0, max=128.0, group="sim_arm: perturbations"),
    _p("joint_noise", DOUBLE, 0.0, "Gaussian noise std on the published joint positions.",
       when=ON_RESET, min=0.0, max=0.1, unit="rad", group="sim_arm: perturbations"),
    _p("image_drop_prob", DOUBLE, 0.0, "Probability of dropping a camera frame.", when=ON_RESET,
       min=0.0, max=0.95, group="sim_arm: perturbations"),
    _p("obstacle_shift", DOUBLE_ARRAY, [0.0, 0.0], "Obstacle jump (dx, dy) on the table, at "
       f"most {MAX_OBSTACLE_SHIFT} m long.", when=ON_RESET, unit="m",
       group="sim_arm: perturbations"),
    _p("obstacle_shift_time", DOUBLE, 1.0, "Sim seconds after the reset when the obstacle jumps.",
       when=ON_RESET, min=0.0, max=600.0, unit="s", group="sim_arm: perturbations"),
    # --- the task and the hand (sim/tasks.py; SimWorld's fingers) -------------------------------
    _p("task", STRING, "panda_reach", "The task (sim/tasks.py): panda_reach (round the obstacle "
       "to the target) or pick_place (the cube into the left or the right bin).",
       choices=TASK_NAMES, group="sim_arm: task"),
    _p("gripper_topic", STRING, "gripper_controller/commands", "Float64MultiArray gripper "
       "input: [panda_finger_joint1, panda_finger_joint2] targets, each 0..0.04 m (half the "
       "hand's width), reached at 0.05 m/s with at most 40 N per finger.",
       group="sim_arm: task"),
    # --- the blind ablation (sim/perturbation.py): a perturbation, listed with them ------------
    _p("image_freeze", DOUBLE, 0.0, "1: every camera frame of the episode is its first (the "
       "policy never sees the arm move); 0: off. Only 0 or 1.", when=ON_RESET, min=0.0,
       max=1.0, group="sim_arm: perturbations"),
)

SIM_SPECS: dict[str, ParamSpec] = by_name(SIM_PARAMS)
PERTURBATION_SETTINGS = tuple(p.name for p in SIM_PARAMS if p.group == "sim_arm: perturbations")
EPISODE_SETTINGS = tuple(p.name for p in SIM_PARAMS if p.when == ON_RESET)


def defaults() -> dict[str, Any]:
    """Every sim_arm setting at its default."""
    return defaults_of(SIM_PARAMS)


def check_shift(shift: Any) -> str | None:
    """Why an obstacle shift is not admissible (it spans two values: the table cannot say it)."""
    vals = list(shift)
    if len(vals) != 2 or not all(math.isfinite(float(s)) for s in vals):
        return f"obstacle_shift must be 2 finite values (dx, dy), got {vals}"
    if math.hypot(float(vals[0]), float(vals[1])) > MAX_OBSTACLE_SHIFT:
        return f"obstacle_shift must be at most {MAX_OBSTACLE_SHIFT} m long, got {vals}"
    return None


def check_freeze(value: Any) -> str | None:
    """Why an image_freeze value is not admissible: it is a switch carried as a number."""
    if float(value) not in (0.0, 1.0):
        return f"image_freeze must be 0 or 1, got {value}"
    return None


def _consistency(v: Mapping[str, Any]) -> list[str]:
    errors: list[str] = []
    if sorted(v["joint_names"]) != sorted(PANDA_JOINT_NAMES):
        errors.append(f"joint_names must be a permutation of {list(PANDA_JOINT_NAMES)}")
    if float(v["timestep"]) > 1.0 / float(v["rate_hz"]) + 1e-12:
        errors.append("timestep must not exceed one tick (1 / rate_hz)")
    t = float(v["episode_timeout"])
    if 0.0 < t < 0.5:
        errors.append("episode_timeout must be 0 or in [0.5, 3600] s")
    shift = check_shift(v["obstacle_shift"])
    if shift:
        errors.append(shift)
    freeze = check_freeze(v["image_freeze"])
    if freeze:
        errors.append(freeze)
    return errors


def validate(values: Mapping[str, Any]) -> list[str]:
    """All reasons why this full set of sim_arm values is not admissible (empty when it is)."""
    errors = [e for name, spec in SIM_SPECS.items()
              if (e := check(spec, values.get(name))) is not None]
    return errors or _consistency(values)


def check_update(current: Mapping[str, Any], changes: Mapping[str, Any]) -> list[str]:
    """Reasons to refuse `changes` on top of `current` (a read-only setting cannot change)."""
    errors = []
    for name, value in changes.items():
        spec = SIM_SPECS.get(name)
        if spec is None:
            errors.append(f"unknown parameter '{name}'")
        elif spec.read_only:
            errors.append(f"{name} is read only: set at start-up")
        elif (e := check(spec, value)) is not None:
            errors.append(e)
    if errors:
        return errors
    return _consistency({**current, **changes})
