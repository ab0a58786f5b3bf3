"""Every tunable of the controller node, declared once.

The table below is the single source for the ROS parameter declarations, their descriptors (range,
read-only flag, description), the validation the on-set-parameters callback runs, and the markdown
table in docs/parameters.md (regenerated with
`python -m diffusion_controller.ros.params --markdown > docs/parameters.md`).
Keeping it in one place is what stops the docs, the launch files and the checks from drifting apart.

This module imports no rclpy at module level so the table can be validated and rendered anywhere.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from diffusion_controller.control import panda
from diffusion_controller.control.assembly import format_spheres, parse_pairs, parse_spheres

# Parameter kinds, named as the ROS parameter types they become.
BOOL = "bool"
INT = "integer"
DOUBLE = "double"
STRING = "string"
DOUBLE_ARRAY = "double_array"
STRING_ARRAY = "string_array"

# When a change takes effect.
LIVE = "live"  # applied to the running core at once
ON_CONFIGURE = "configure"  # stored; used by the next configure transition
READ_ONLY = "read-only"  # fixed at start-up (parameter file or command line)

PANDA_JOINTS = [f"panda_joint{i}" for i in range(1, 8)]


@dataclass(frozen=True)
class ParamSpec:
    """One parameter: its type, default, documentation, admissible values and when it applies."""

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
            return " | ".join(self.choices)
        if self.min is not None or self.max is not None:
            lo = "-inf" if self.min is None else _num(self.min)
            hi = "inf" if self.max is None else _num(self.max)
            return f"[{lo}, {hi}]"
        return ""


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(float(x))


def _p(name: str, kind: str, default: Any, description: str, **kw: Any) -> ParamSpec:
    return ParamSpec(name, kind, default, description, **kw)


PARAMS: tuple[ParamSpec, ...] = (
    # --- node -----------------------------------------------------------------------------------
    _p("autostart", BOOL, True, "Configure and activate by itself after start-up, through the "
       "normal lifecycle transitions.", when=READ_ONLY, group="node"),
    _p("start_enabled", BOOL, True, "Motion enabled when the node becomes active. false: it "
       "comes up active but holds still until an operator calls ~/enable true (what a real arm "
       "needs; config/arm.yaml sets it).", group="node"),
    _p("enable_timeout", DOUBLE, 0.0, "Deadman: an enable lapses (the arm brakes to a stop) "
       "unless ~/enable true is called again within this time (0: off).", when=LIVE, min=0.0,
       max=3600.0, unit="s", group="node"),
    _p("realtime", BOOL, False, "Try SCHED_FIFO for the control thread (needs CAP_SYS_NICE or an "
       "rtprio limit); what was granted is reported on /diagnostics.", group="node"),
    _p("realtime_priority", INT, 80, "SCHED_FIFO priority requested when `realtime` is true.",
       min=1, max=99, group="node"),
    _p("cpu_affinity", INT, -1, "CPU core to pin the control thread to (-1: no pinning).",
       min=-1, max=1023, group="node"),
    _p("diagnostics_rate", DOUBLE, 1.0, "Rate of /diagnostics messages.", min=0.2, max=10.0,
       unit="Hz", group="node"),
    _p("publish_markers", BOOL, True, "Publish the current chunk (joint trajectory on ~/chunk and "
       "end-effector path markers on ~/chunk_markers) for visualisation.", when=LIVE,
       group="node"),
    _p("marker_frame", STRING, "panda_link0", "Frame id of the end-effector path markers (the "
       "robot's base frame).", group="node"),
    _p("ee_frame", STRING, "panda_hand", "URDF frame whose path is drawn as the chunk marker.",
       group="node"),
    # --- rates ----------------------------------------------------------------------------------
    _p("control_rate_hz", DOUBLE, 100.0, "Rate of the control loop and of the published commands.",
       when=READ_ONLY, min=10.0, max=1000.0, unit="Hz", group="rates"),
    _p("inference_rate_hz", DOUBLE, 10.0, "Rate at which new chunks are requested. Its period "
       "plus `latency_margin` must fit inside the model's chunk.", when=LIVE, min=0.5, max=50.0,
       unit="Hz", group="rates"),
    # --- model ----------------------------------------------------------------------------------
    _p("model_path", STRING, "", "Model artifact directory (model.safetensors + config.json).",
       group="model"),
    _p("backend", STRING, "auto", "Inference backend; auto picks TensorRT, then onnxruntime, "
       "then torch.", choices=("auto", "torch", "onnxruntime", "tensorrt"), group="model"),
    _p("fp16", BOOL, False, "Half precision on GPU backends.", group="model"),
    _p("engine_cache_dir", STRING, "", "TensorRT engine cache (empty: "
       "~/.cache/diffusion_controller/engines).", group="model"),
    _p("inference_mode", STRING, "process", "Where the network runs: process (a child process "
       "with its own interpreter, so inference never holds the GIL the control loop needs; "
       "restarted when it dies or stalls) or thread (a thread of the node's process).",
       choices=("process", "thread"), group="model"),
    _p("inference_timeout", DOUBLE, 1.0, "Process mode: an inference without a result after this "
       "long is abandoned, its process killed and restarted (the chunk watchdog brakes "
       "meanwhile).", when=LIVE, min=0.05, max=60.0, unit="s", group="model"),
    _p("inference_threads", INT, 0, "CPU threads for the backend (0: the library's default).",
       min=0, max=64, group="model"),
    _p("warmup_runs", INT, 2, "Inferences run during configure so the first real one is not slow.",
       min=0, max=100, group="model"),
    _p("joint_names", STRING_ARRAY, list(PANDA_JOINTS), "Controlled joints, in command order; the "
       "model's joints must be the same set.", group="model"),
    # --- sampling -------------------------------------------------------------------------------
    _p("ddim_steps", INT, 8, "DDIM denoising steps per chunk.", when=LIVE, min=1, max=100,
       group="sampling"),
    _p("eta", DOUBLE, 0.0, "DDIM stochasticity (0: deterministic DDIM).", when=LIVE, min=0.0,
       max=1.0, group="sampling"),
    _p("warm_start", BOOL, True, "Start denoising from the previous chunk re-timed onto the new "
       "grid, re-noised to `warm_start_strength`.", when=LIVE, group="sampling"),
    _p("warm_start_strength", DOUBLE, 0.5, "Noise level the warm start is re-noised to (1: from "
       "pure noise).", when=LIVE, min=0.05, max=1.0, group="sampling"),
    _p("prefix_steps", INT, 2, "At most this many first actions of a new chunk are pinned to the "
       "executing chunk (inpainting) to cover inference latency; must be below the horizon.",
       when=LIVE, min=0, max=64, group="sampling"),
    _p("inference_frame_wait", DOUBLE, 0.07, "At each inference period, wait up to this long "
       "(at most half the period) for a new camera frame and start on it, so the observation is "
       "fresh (0: start at once on the newest frame).", when=LIVE, min=0.0, max=0.5, unit="s",
       group="sampling"),
    _p("num_samples", INT, 1, "Chunks sampled per inference (one batch); more than one enables "
       "the uncertainty monitor.", when=LIVE, min=1, max=32, group="sampling"),
    _p("uncertainty_threshold", DOUBLE, 0.2, "Spread (std across samples of the first actions, "
       "max over joints) above which `uncertainty_action` applies.", when=LIVE, min=0.0,
       max=10.0, unit="rad", group="sampling"),
    _p("uncertainty_action", STRING, "scale", "What to do when the spread passes the threshold: "
       "scale (slow the chunk down by `uncertainty_scale`), hold (stop and hold until the spread "
       "falls) or report (diagnostics only).", when=LIVE, choices=("scale", "hold", "report"),
       group="sampling"),
    _p("uncertainty_scale", DOUBLE, 0.5, "Speed factor applied to uncertain chunks when "
       "`uncertainty_action` is scale.", when=LIVE, min=0.05, max=1.0, group="sampling"),
    _p("seed", INT, -1, "Seed of the sampling noise (-1: fresh noise every inference).",
       when=LIVE, min=-1, max=2**31 - 1, group="sampling"),
    # --- scheduling -----------------------------------------------------------------------------
    _p("latency_margin", DOUBLE, 0.02, "Actions due within this margin of a chunk's arrival are "
       "dropped as already too late.", min=0.0, max=1.0, unit="s", group="scheduling"),
    _p("blend_time", DOUBLE, 0.1, "Hand-over window from the executing chunk to a new one.",
       min=0.0, max=2.0, unit="s", group="scheduling"),
    # --- safety ---------------------------------------------------------------------------------
    _p("safety_mode", STRING, "cbf", "Safety filter: one-step CBF QP or MPC over "
       "`mpc_horizon` ticks.", choices=("cbf", "mpc"), group="safety"),
    _p("mpc_horizon", INT, 10, "MPC horizon in control ticks.", min=2, max=50, group="safety"),
    _p("mpc_inputs", INT, 5, "Distinct accelerations per joint over the MPC horizon (move "
       "blocking: the first tick's own, then blocks sharing one); at most `mpc_horizon`, which "
       "gives one per tick. Fewer make a smaller, faster QP.", min=2, max=50, group="safety"),
    _p("position_margin", DOUBLE, 0.05, "Joint position limits are tightened by this margin.",
       when=LIVE, min=0.0, max=0.5, unit="rad", group="safety"),
    _p("velocity_scale", DOUBLE, 0.5, "Fraction of the URDF velocity limits allowed.", when=LIVE,
       min=0.01, max=1.0, group="safety"),
    _p("acceleration_scale", DOUBLE, 0.5, "Fraction of the acceleration limits allowed.",
       when=LIVE, min=0.01, max=1.0, group="safety"),
    _p("jerk_scale", DOUBLE, 0.5, "Fraction of the jerk limits allowed.", when=LIVE, min=0.01,
       max=1.0, group="safety"),
    _p("obstacles", DOUBLE_ARRAY, [], "Keep-out spheres in the base frame, flat x, y, z, r, ...",
       when=LIVE, unit="m", group="safety"),
    _p("sphere_margin", DOUBLE, 0.02, "Extra clearance kept between link spheres and obstacles.",
       when=LIVE, min=0.0, max=0.5, unit="m", group="safety"),
    _p("workspace_min", DOUBLE_ARRAY, [-1.2, -1.2, -0.5], "Lower corner (x, y, z) of the box the "
       "link spheres must stay in, base frame.", when=LIVE, unit="m", group="safety"),
    _p("workspace_max", DOUBLE_ARRAY, [1.2, 1.2, 1.6], "Upper corner (x, y, z) of the workspace "
       "box, base frame.", when=LIVE, unit="m", group="safety"),
    _p("table_z", DOUBLE, 0.0, "Height of the table plane the link spheres must stay above "
       "(base frame).", when=LIVE, min=-2.0, max=2.0, unit="m", group="safety"),
    _p("collision_spheres", STRING_ARRAY, format_spheres(panda.PANDA_SPHERES), "Link collision "
       "spheres the barriers act on, one 'link: x y z r' per sphere in that link's frame "
       "(defaults: the Panda/FR3 with its hand). Another arm needs its own.", unit="m",
       group="safety"),
    _p("self_collision_pairs", STRING_ARRAY, [f"{a}:{b}" for a, b in
       panda.PANDA_SELF_COLLISION_PAIRS], "Links whose spheres must keep apart, 'link_a:link_b' "
       "(defaults: the Panda/FR3 hand, fingers and forearm against its base links).",
       group="safety"),
    # --- watchdogs ------------------------------------------------------------------------------
    _p("joint_state_timeout", DOUBLE, 0.1, "Brake and hold when /joint_states is older than this.",
       when=LIVE, min=0.005, max=2.0, unit="s", group="watchdogs"),
    _p("image_timeout", DOUBLE, 0.5, "Brake and hold when the newest image is older than this; "
       "no inference runs on older images.", when=LIVE, min=0.01, max=10.0, unit="s",
       group="watchdogs"),
    _p("chunk_timeout", DOUBLE, 1.0, "Brake and hold when no fresh chunk arrived within this "
       "time.", when=LIVE, min=0.05, max=10.0, unit="s", group="watchdogs"),
    _p("tracking_error_limit", DOUBLE, 0.3, "Brake when measured and commanded positions differ "
       "by more than this on any joint.", when=LIVE, min=0.01, max=3.0, unit="rad",
       group="watchdogs"),
    _p("stamp_tolerance", DOUBLE, 0.05, "Input stamps further than this in the future are "
       "rejected.", when=LIVE, min=0.0, max=1.0, unit="s", group="watchdogs"),
    # --- interfaces -----------------------------------------------------------------------------
    _p("command_interface", STRING, "position", "position: std_msgs/Float64MultiArray, one "
       "position per control tick, for a forward position controller on hardware that "
       "interpolates and filters its input itself (see docs/real_robot.md: not a Franka); "
       "trajectory: a streamed trajectory_msgs/JointTrajectory for joint_trajectory_controller "
       "(open_loop_control true), each message the safety filter's certified plan from the "
       "command due next over `trajectory_horizon`.", choices=("position", "trajectory"),
       group="interfaces"),
    _p("position_command_topic", STRING, "forward_position_controller/commands", "Output topic "
       "when `command_interface` is position.", group="interfaces"),
    _p("trajectory_command_topic", STRING, "joint_trajectory_controller/joint_trajectory",
       "Output topic when `command_interface` is trajectory.", group="interfaces"),
    _p("trajectory_horizon", DOUBLE, 0.1, "How far ahead each streamed trajectory reaches: the "
       "filter's certified continuation (braking at the acceleration limit) beyond the next "
       "command. If messages stop, the arm follows it to rest.", min=0.1, max=2.0, unit="s",
       group="interfaces"),
    _p("trajectory_lead", DOUBLE, 0.05, "Each streamed command is due this long after its own "
       "time (control/stream.py): each message repeats the recent commands, so it must arrive "
       "before its second-newest command is due (transport and scheduling delay up to about "
       "this minus two periods), and a new run bridges from the arm's state over about this "
       "long. The arm follows the command stream delayed by this much.", min=0.0, max=0.2,
       unit="s", group="interfaces"),
    _p("trajectory_rate_hz", DOUBLE, 100.0, "Rate of the streamed trajectories (at most the "
       "control rate; every n-th tick, the horizon extended to cover the gap).", min=20.0,
       max=1000.0, unit="Hz", group="interfaces"),
    _p("joint_states_topic", STRING, "joint_states", "Measured joint states.",
       group="interfaces"),
    _p("image_topics", STRING_ARRAY, ["camera/image_raw"], "One image topic per model camera, in "
       "the order of the model's `cameras`.", group="interfaces"),
    _p("image_transport", STRING, "raw", "raw: sensor_msgs/Image (rgb8, bgr8, mono8, rgba8, "
       "bgra8); compressed: sensor_msgs/CompressedImage on <topic>/compressed, decoded with "
       "Pillow or OpenCV if one is installed.", choices=("raw", "compressed"),
       group="interfaces"),
    _p("robot_description_topic", STRING, "robot_description", "URDF topic (transient local).",
       group="interfaces"),
    _p("urdf_path", STRING, "", "URDF file; when set, used instead of the robot_description "
       "topic.", group="interfaces"),
    _p("robot_description_timeout", DOUBLE, 5.0, "How long configure waits for the URDF.",
       min=0.0, max=120.0, unit="s", group="interfaces"),
    # --- issue 15: cameras ----------------------------------------------------------------------
    _p("camera_8uc3_order", STRING, "", "Channel order of 8UC3 images, which carry none: rgb or "
       "bgr (OpenCV-based drivers publish BGR); empty: 8UC3 is refused with a warning. Raw "
       "images also accept yuv422/uyvy (UYVY) and yuv422_yuy2/yuyv (YUYV), converted with "
       "BT.601; depth and 16/32-bit images are refused.", choices=("", "rgb", "bgr"),
       group="interfaces"),
)

SPECS: dict[str, ParamSpec] = {p.name: p for p in PARAMS}


@dataclass(frozen=True)
class ModelFacts:
    """What the loaded model imposes on the parameters (known only after configure)."""

    horizon: int
    action_dt: float
    num_train_timesteps: int
    joint_names: tuple[str, ...] = ()
    cameras: tuple[str, ...] = ()


def defaults() -> dict[str, Any]:
    return {p.name: _copy(p.default) for p in PARAMS}


def _copy(value: Any) -> Any:
    return list(value) if isinstance(value, list) else value


def _type_ok(spec: ParamSpec, value: Any) -> bool:
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


def check_value(name: str, value: Any) -> str | None:
    """Reason why `value` is not admissible for parameter `name` on its own, else None."""
    spec = SPECS.get(name)
    if spec is None:
        return f"unknown parameter '{name}'"
    if not _type_ok(spec, value):
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


def _check_consistency(v: Mapping[str, Any], model: ModelFacts | None) -> list[str]:
    errors: list[str] = []
    lo, hi = list(v["workspace_min"]), list(v["workspace_max"])
    if len(lo) != 3 or len(hi) != 3:
        errors.append(
            f"workspace_min and workspace_max need 3 values (x, y, z), got {len(lo)} and {len(hi)}"
        )
    elif any(a >= b for a, b in zip(lo, hi, strict=True)):
        errors.append(f"workspace_min {lo} must be below workspace_max {hi} on every axis")
    elif float(v["table_z"]) >= hi[2]:
        errors.append(f"table_z {v['table_z']} must be below workspace_max z {hi[2]}")
    obstacles = list(v["obstacles"])
    if len(obstacles) % 4:
        errors.append(
            f"obstacles must be a flat list x, y, z, r, ... (a multiple of 4 values), "
            f"got {len(obstacles)}"
        )
    elif any(r <= 0 for r in obstacles[3::4]):
        errors.append("obstacles: every radius must be positive")
    try:
        parse_spheres(v["collision_spheres"])
        pairs = parse_pairs(v["self_collision_pairs"])
    except ValueError as exc:
        errors.append(str(exc))
    else:
        links = set(parse_spheres(v["collision_spheres"]))
        lonely = sorted({g for p in pairs for g in p} - links)
        if lonely:
            errors.append(f"self_collision_pairs names links {lonely} without collision_spheres")
    if float(v["trajectory_rate_hz"]) > float(v["control_rate_hz"]):
        errors.append(f"trajectory_rate_hz {v['trajectory_rate_hz']} must not exceed "
                      f"control_rate_hz {v['control_rate_hz']}")
    if int(v["mpc_inputs"]) > int(v["mpc_horizon"]):
        errors.append(f"mpc_inputs {v['mpc_inputs']} must not exceed mpc_horizon "
                      f"{v['mpc_horizon']}")
    names = list(v["joint_names"])
    if not names:
        errors.append("joint_names must not be empty")
    elif len(set(names)) != len(names) or any(not n for n in names):
        errors.append(f"joint_names must be unique and non-empty: {names}")
    topics = list(v["image_topics"])
    if not topics:
        errors.append("image_topics must name at least one camera topic")
    elif len(set(topics)) != len(topics) or any(not t for t in topics):
        errors.append(f"image_topics must be unique and non-empty: {topics}")
    if model is not None:
        errors += check_against_model(v, model)
    return errors


def check_against_model(v: Mapping[str, Any], model: ModelFacts) -> list[str]:
    """Reasons why the parameters cannot work with the loaded model."""
    errors: list[str] = []
    if int(v["prefix_steps"]) >= model.horizon:
        errors.append(
            f"prefix_steps {v['prefix_steps']} must be below the model's horizon {model.horizon}"
        )
    if int(v["ddim_steps"]) > model.num_train_timesteps:
        errors.append(
            f"ddim_steps {v['ddim_steps']} exceeds the model's {model.num_train_timesteps} "
            "training timesteps"
        )
    chunk_s = (model.horizon - 1) * model.action_dt
    period = 1.0 / float(v["inference_rate_hz"])
    if period + float(v["latency_margin"]) >= chunk_s:
        errors.append(
            f"inference_rate_hz {v['inference_rate_hz']} cannot fit the model's chunk: a period "
            f"of {period:.3f} s plus latency_margin {v['latency_margin']} s is not shorter than "
            f"the chunk's {chunk_s:.3f} s"
        )
    if model.joint_names and set(model.joint_names) != set(v["joint_names"]):
        errors.append(
            f"joint_names {list(v['joint_names'])} are not the model's joints "
            f"{list(model.joint_names)}"
        )
    if model.cameras and len(model.cameras) != len(v["image_topics"]):
        errors.append(
            f"image_topics has {len(v['image_topics'])} topics for the model's "
            f"{len(model.cameras)} cameras {list(model.cameras)}"
        )
    return errors


def validate(values: Mapping[str, Any], model: ModelFacts | None = None) -> list[str]:
    """All reasons why this full set of values is not admissible (empty when it is)."""
    errors = [e for name in SPECS if (e := check_value(name, values.get(name))) is not None]
    if errors:
        return errors
    return _check_consistency(values, model)


def check_update(
    current: Mapping[str, Any],
    changes: Mapping[str, Any],
    model: ModelFacts | None = None,
) -> list[str]:
    """Reasons to reject `changes` applied on top of `current` (the on-set-parameters check)."""
    errors = [e for name, val in changes.items() if (e := check_value(name, val)) is not None]
    if errors:
        return errors
    merged = dict(current)
    merged.update(changes)
    return _check_consistency(merged, model)


def load_param_file(path: str, node: str = "diffusion_controller") -> dict[str, Any]:
    """Every setting from a ROS parameter file (the `/**` section and the node's own, as
    `--ros-args --params-file` would apply them) on top of the defaults; no rclpy needed, so
    benches and tests build the core from the very file a deployment runs.

    Raises ValueError for an unknown key or an inadmissible set of values."""
    import yaml

    with open(path, encoding="utf-8") as fh:
        doc = yaml.safe_load(fh) or {}
    values = defaults()
    for section in ("/**", node, "/" + node):
        part = (doc.get(section) or {}).get("ros__parameters") or {}
        for name, value in part.items():
            if name not in SPECS:
                raise ValueError(f"{path}: unknown parameter '{name}'")
            if SPECS[name].kind == DOUBLE and isinstance(value, int) \
                    and not isinstance(value, bool):
                value = float(value)
            values[name] = value
    errors = validate(values)
    if errors:
        raise ValueError(f"{path}: " + "; ".join(errors))
    return values


def obstacle_tuples(flat: Sequence[float]) -> list[tuple[float, float, float, float]]:
    """Flat x, y, z, r, ... into (x, y, z, r) tuples (length already validated)."""
    vals = [float(x) for x in flat]
    return [tuple(vals[i : i + 4]) for i in range(0, len(vals) - len(vals) % 4, 4)]  # type: ignore[misc]


# --- rclpy glue (imported lazily so this module stays importable without ROS) -------------------


def descriptor(spec: ParamSpec) -> Any:
    """The rcl_interfaces ParameterDescriptor for `spec` (type, description, range, read-only)."""
    from rcl_interfaces.msg import (
        FloatingPointRange,
        IntegerRange,
        ParameterDescriptor,
    )

    desc = ParameterDescriptor(
        name=spec.name,
        type=_ros_type(spec.kind).value,
        description=spec.description + (f" [{spec.unit}]" if spec.unit else ""),
        read_only=spec.read_only,
    )
    extra = [f"takes effect: {spec.when}"]
    if spec.choices:
        extra.insert(0, "one of: " + ", ".join(spec.choices))
    desc.additional_constraints = "; ".join(extra)
    if spec.kind == DOUBLE and (spec.min is not None or spec.max is not None):
        desc.floating_point_range = [
            FloatingPointRange(
                from_value=float(spec.min if spec.min is not None else -sys.float_info.max),
                to_value=float(spec.max if spec.max is not None else sys.float_info.max),
                step=0.0,
            )
        ]
    if spec.kind == INT and (spec.min is not None or spec.max is not None):
        desc.integer_range = [
            IntegerRange(
                from_value=int(spec.min if spec.min is not None else -(2**63)),
                to_value=int(spec.max if spec.max is not None else 2**63 - 1),
                step=1,
            )
        ]
    return desc


def _ros_type(kind: str) -> Any:
    from rclpy.parameter import Parameter

    return {
        BOOL: Parameter.Type.BOOL,
        INT: Parameter.Type.INTEGER,
        DOUBLE: Parameter.Type.DOUBLE,
        STRING: Parameter.Type.STRING,
        DOUBLE_ARRAY: Parameter.Type.DOUBLE_ARRAY,
        STRING_ARRAY: Parameter.Type.STRING_ARRAY,
    }[kind]


def declare_all(node: Any) -> None:
    """Declare every parameter on `node` with its descriptor (works on Humble's rclpy).

    Empty array defaults cannot be declared by value (rclpy would infer a byte array), so those are
    declared by type and then set to an empty array of the right type unless overridden.
    """
    from rclpy.parameter import Parameter

    for spec in PARAMS:
        desc = descriptor(spec)
        if isinstance(spec.default, list) and not spec.default:
            node.declare_parameter(spec.name, _ros_type(spec.kind), desc)
            if node.get_parameter_type(spec.name) == Parameter.Type.NOT_SET or _unset(node, spec):
                node.set_parameters([Parameter(spec.name, _ros_type(spec.kind), [])])
        else:
            default = spec.default
            if spec.kind == DOUBLE:
                default = float(default)
            node.declare_parameter(spec.name, _copy(default), desc)


def _unset(node: Any, spec: ParamSpec) -> bool:
    try:
        node.get_parameter(spec.name)
    except Exception:  # ParameterUninitializedException (not exported the same way on every distro)
        return True
    return False


def read_all(node: Any) -> dict[str, Any]:
    """Current values of every parameter as plain Python values."""
    return {spec.name: to_python(spec, node.get_parameter(spec.name).value) for spec in PARAMS}


def to_python(spec: ParamSpec, value: Any) -> Any:
    """Normalise a value from rclpy (arrays may arrive as array.array) to plain Python."""
    if spec.kind in (DOUBLE_ARRAY, STRING_ARRAY):
        return [] if value is None else list(value)
    if spec.kind == DOUBLE and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


# --- documentation --------------------------------------------------------------------------


def _default_text(spec: ParamSpec) -> str:
    d = spec.default
    if isinstance(d, bool):
        return "true" if d else "false"
    if isinstance(d, str):
        return f'`"{d}"`'
    if isinstance(d, list):
        return "`[" + ", ".join(f'"{x}"' if isinstance(x, str) else _num(x) for x in d) + "]`"
    return f"`{d!r}`"


def markdown() -> str:
    """docs/parameters.md, generated from the table."""
    lines = [
        "# Parameters of the controller node",
        "",
        "Generated from `diffusion_controller/ros/params.py` by",
        "`python -m diffusion_controller.ros.params --markdown > docs/parameters.md`; "
        "do not edit by hand.",
        "",
        "*When*: **live** changes apply to the running controller at once; **configure** changes "
        "are stored and take effect on the next configure transition; **read-only** parameters "
        "are fixed at start-up (parameter file or command line). Values outside the range, or "
        "inconsistent with other parameters or with the loaded model, are rejected with a reason.",
        "Topic defaults are relative names, so the node's namespace moves them "
        "(`namespace:=arm1` reads `/arm1/joint_states`); a name starting with `/` stays put, as "
        "in the shipped config/arm.yaml.",
        "",
    ]
    groups: list[str] = []
    for p in PARAMS:
        if p.group not in groups:
            groups.append(p.group)
    for group in groups:
        lines += [f"## {group}", ""]
        lines += ["| name | type | default | range | unit | when | description |"]
        lines += ["| --- | --- | --- | --- | --- | --- | --- |"]
        for p in PARAMS:
            if p.group != group:
                continue
            rng = p.range_text()
            lines.append(
                f"| `{p.name}` | {p.kind} | {_default_text(p)} | {rng} | {p.unit} | {p.when} "
                f"| {p.description.replace('|', '/')} |"
            )
        lines.append("")
    return "\n".join(lines)


def yaml_defaults() -> str:
    """A complete parameter file with every default (a starting point for config/*.yaml)."""
    out = ["/**:", "  ros__parameters:"]
    for p in PARAMS:
        d = p.default
        if isinstance(d, bool):
            text = "true" if d else "false"
        elif isinstance(d, str):
            text = f'"{d}"'
        elif isinstance(d, list):
            if not d:  # rcl's YAML parser rejects empty sequences: leave the default in place
                out.append(f"    # {p.name}: []")
                continue
            text = "[" + ", ".join(f'"{x}"' if isinstance(x, str) else repr(x) for x in d) + "]"
        else:
            text = repr(d)
        out.append(f"    {p.name}: {text}")
    return "\n".join(out) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--markdown", action="store_true", help="print docs/parameters.md")
    group.add_argument("--yaml", action="store_true", help="print a parameter file of defaults")
    args = parser.parse_args(argv)
    sys.stdout.write(markdown() if args.markdown else yaml_defaults())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
