"""The controller node's settings, each declared once: the table every other layer derives from.

Name, type, default, range, unit, description and when a change applies are written here and
nowhere else. ros/params.py declares them on the node (descriptors, the on-set check), the core's
config objects carry the same names and are built from these values by control/assembly.py (their
ranges are checked against this table, see spec.check_fields), settings/checks.py holds what
spans several settings, and docs/parameters.md is generated from it
(`python -m diffusion_controller.settings --markdown > docs/parameters.md`).

ROS-free and importing nothing of the package but settings/, so every layer can read it.
New settings go at the end of the table, as one block.
"""

from __future__ import annotations

from typing import Any

from diffusion_controller.settings.geometry import format_spheres
from diffusion_controller.settings.panda import (
    PANDA_EE_FRAME,
    PANDA_FINGER_LINKS,
    PANDA_JOINT_NAMES,
    PANDA_SELF_COLLISION_PAIRS,
    PANDA_SPHERES,
)
from diffusion_controller.settings.spec import (
    BOOL,
    DOUBLE,
    DOUBLE_ARRAY,
    INT,
    LIVE,
    READ_ONLY,
    STRING,
    STRING_ARRAY,
    ParamSpec,
    by_name,
    defaults_of,
)

# The inference backends the runtime has (runtime/backend.py reads them from here); "auto" picks.
BACKENDS = ("torch", "onnxruntime", "tensorrt")
# The gripper command messages the node can send (ros/gripper_io.py builds them).
GRIPPER_COMMAND_TYPES = ("float64_multi_array", "joint_trajectory")


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
    _p("ee_frame", STRING, PANDA_EE_FRAME, "URDF frame whose path is drawn as the chunk marker.",
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
       "then torch.", choices=("auto", *BACKENDS), group="model"),
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
    _p("joint_names", STRING_ARRAY, list(PANDA_JOINT_NAMES), "Controlled joints, in command "
       "order; the model's joints must be the same set.", group="model"),
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
    _p("seed", INT, -1, "Seed of the sampling noise (-1: fresh noise every inference; otherwise "
       "each inference's noise comes from this seed and its observation, so equal observations "
       "give equal chunks and new ones new noise).",
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
    _p("collision_spheres", STRING_ARRAY, format_spheres(PANDA_SPHERES), "Link collision "
       "spheres the barriers act on, one 'link: x y z r' per sphere in that link's frame "
       "(defaults: the Panda/FR3 with its hand). Another arm needs its own.", unit="m",
       group="safety"),
    _p("self_collision_pairs", STRING_ARRAY, [f"{a}:{b}" for a, b in
       PANDA_SELF_COLLISION_PAIRS], "Links whose spheres must keep apart, 'link_a:link_b' "
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
    # --- issue 13: tool and body in the safety filter ---------------------------------------------
    _p("tool_links", STRING_ARRAY, list(PANDA_FINGER_LINKS), "Links whose collision "
       "spheres are the tool (the fingers): they keep `tool_clearance` over the table and may "
       "touch `grasp_objects`; every other link (and the hand body) keeps `sphere_margin` from "
       "both. Empty: no tool. Another robot names its own finger links.", group="safety"),
    _p("tool_clearance", DOUBLE, 0.005, "Clearance the tool spheres keep over the table (or the "
       "workspace floor, the higher one), instead of `sphere_margin`. The finger spheres cover "
       "each finger over its whole travel with 5 mm to spare, so the fingertips stay at least "
       "this plus about 8 mm above the table.", when=LIVE, min=0.0, max=0.5, unit="m",
       group="safety"),
    _p("grasp_objects", DOUBLE_ARRAY, [], "Objects to be grasped, as spheres in the base frame, "
       "flat x, y, z, r, ...: the tool may touch them, the links and the hand body keep "
       "`grasp_margin` from them (a keep-out sphere for the body only). Set the object as it is "
       "picked and clear it after the release.", when=LIVE, unit="m", group="safety"),
    _p("grasp_margin", DOUBLE, 0.005, "Clearance the links and the hand body keep from the "
       "`grasp_objects`: small, since the hand comes close to what its fingers enclose (a 5 cm "
       "object between the fingertips 1 cm over the table leaves 6 mm to the Panda hand's "
       "mesh; its spheres add 5 mm or more to that mesh).", when=LIVE, min=0.0, max=0.5,
       unit="m", group="safety"),
    # --- issue 13: gripper (used only when the model's actions include a gripper) ---------------
    _p("gripper_command_topic", STRING, "gripper_controller/commands", "Gripper commands, sent "
       "with every arm command (position interface) or every streamed trajectory, when the "
       "model has a gripper (nothing is published for an arm-only model). The finger joints "
       "are read from joint_states_topic; a message lacking them is rejected like one lacking "
       "an arm joint.", group="gripper"),
    _p("gripper_command_type", STRING, "float64_multi_array", "float64_multi_array: "
       "std_msgs/Float64MultiArray with one position per gripper joint (a width w is sent as "
       "[w/2, w/2] to a Panda hand's forward controller); joint_trajectory: a one-point "
       "trajectory_msgs/JointTrajectory naming the gripper joints, due trajectory_lead after the "
       "command's stamp plus the time to the next message.",
       choices=GRIPPER_COMMAND_TYPES, group="gripper"),
    _p("gripper_width_limits", DOUBLE_ARRAY, [0.0, 0.08], "[min, max] of every gripper command "
       "(the width for a width gripper, each joint for a per-joint one); 0..0.08 m is the "
       "Panda/FR3 hand's travel.", unit="m", group="gripper"),
    _p("gripper_max_speed", DOUBLE, 0.1, "Rate limit of the gripper command per dimension. "
       "While the arm holds, brakes or is stopped (fault, e-stop, pause) the gripper holds its "
       "last command: it never opens by itself, as it may be holding an object.", min=1e-4,
       max=2.0, unit="m/s", group="gripper"),
)

SPECS: dict[str, ParamSpec] = by_name(PARAMS)
LIVE_SETTINGS = frozenset(p.name for p in PARAMS if p.when == LIVE)


def defaults() -> dict[str, Any]:
    """Every controller setting at its default (a fresh, complete values mapping)."""
    return defaults_of(PARAMS)
