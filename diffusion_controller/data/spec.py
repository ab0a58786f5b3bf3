"""The data spec: which topics (or LeRobot features) of a recording feed training, and how.

Real arms record under many names and types; instead of guessing, `train --spec FILE` and
`data inspect --spec FILE` read a small YAML file:

    joint_states: {topic: /joint_states}
    action:
      source: commands        # commands | trajectory | measured
      topic: /forward_position_controller/commands
      lead_s: 0.0             # the action at t is the source's value at t + lead_s
    cameras: {camera: /camera/image_raw}   # Image or CompressedImage, detected per topic
    alignment: {tolerance_s: 0.05}
    episodes: {split: bag}    # bag (one bag per episode) | marker
    task_topic: /sim/task
    gripper:                  # optional; `gripper: {}` is the Panda hand with these defaults
      joints: [panda_finger_joint1, panda_finger_joint2]   # state: these joints' positions
      mapping: width          # width (one dim, m: sum of the joints) | joints (one dim each)
      source: commands        # commands | trajectory | measured, as for the arm's action
      topic: /gripper_controller/commands   # Float64MultiArray, one value per gripper joint

Every key is optional; without a file the spec is `DataSpec()` and reproduces the readers'
behaviour from before specs existed. For a LeRobot dataset directory the same keys name
features instead of topics (joint_states.topic: observation.state, action.topic: action,
cameras: {name: observation.images.NAME}); see docs/data.md.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from diffusion_controller.data.gripper import MAPPINGS, PANDA_FINGERS, GripperConfig

SOURCES = ("commands", "trajectory", "measured")
SPLITS = ("bag", "marker")
DEFAULT_TOLERANCE_S = 0.05
_KEYS = {"joint_states", "action", "cameras", "alignment", "episodes", "task_topic", "gripper"}


class SpecError(ValueError):
    """The spec file is malformed; the message names the key and the file."""


@dataclass(frozen=True)
class ActionSpec:
    """Where actions come from.

    commands: std_msgs/Float64MultiArray in the controller's joint order (receive time).
    trajectory: trajectory_msgs/JointTrajectory, each message's first point, by joint name.
    measured: the joint states themselves; the action at t is the position at t + lead_s, which
      is how kinesthetic or teleoperated demonstrations (no command stream) become targets.
    """

    source: str = "commands"
    topic: str | None = None  # None: the source's default (joint_states.topic for measured)
    lead_s: float | None = None  # None: 0 for commands/trajectory, one action_dt for measured

    def resolved_lead(self, action_dt: float) -> float:
        if self.lead_s is not None:
            return float(self.lead_s)
        return float(action_dt) if self.source == "measured" else 0.0


GRIPPER_TOPICS = {
    "commands": "/gripper_controller/commands",
    "trajectory": "/gripper_trajectory_controller/joint_trajectory",
}


@dataclass(frozen=True)
class GripperSpec:
    """Where a gripper's state and actions come from (data/gripper.py for the mapping).

    State: the positions of `joints` in the joint states. Action: `source` as for the arm, on
    `topic`: commands are Float64MultiArray with one value per gripper joint in `joints` order
    (the forward gripper controller's; the recorder writes [w/2, w/2] for a width w), trajectory
    is a JointTrajectory's first point by joint name, measured is the joint states `lead_s`
    ahead (the action's lead). The action's lead (action.lead_s) applies to the gripper too.
    """

    joints: tuple[str, ...] = PANDA_FINGERS
    mapping: str = "width"
    source: str = "commands"
    topic: str | None = None

    @property
    def config(self) -> GripperConfig:
        return GripperConfig(list(self.joints), self.mapping)

    def action_topic(self, joint_topic: str) -> str:
        if self.topic:
            return self.topic
        return joint_topic if self.source == "measured" else GRIPPER_TOPICS[self.source]

    def to_dict(self) -> dict[str, Any]:
        return {"joints": list(self.joints), "mapping": self.mapping, "source": self.source,
                "topic": self.topic}


@dataclass(frozen=True)
class DataSpec:
    """A parsed spec file (see the module doc); `DataSpec()` is today's defaults."""

    joint_topic: str | None = None  # None: /joint_states (bags) or observation.state (LeRobot)
    action: ActionSpec = field(default_factory=ActionSpec)
    cameras: dict[str, str] | None = None  # None: --cameras / the reader's default
    tolerance_s: float = DEFAULT_TOLERANCE_S
    split: str = "bag"
    marker_topic: str | None = None
    task_topic: str | None = None
    gripper: GripperSpec | None = None  # None: the recording's gripper is not read
    path: str | None = None  # the file it came from, for messages

    @property
    def is_default(self) -> bool:
        return self == DataSpec(path=self.path)

    def action_topic(self, joint_topic: str) -> str:
        """The topic actions are read from, defaults filled in."""
        if self.action.topic:
            return self.action.topic
        if self.action.source == "measured":
            return joint_topic
        if self.action.source == "trajectory":
            return "/joint_trajectory_controller/joint_trajectory"
        return "/forward_position_controller/commands"

    def to_dict(self) -> dict[str, Any]:
        """The spec as it would be written back (for model cards and `inspect --json`)."""
        return {
            "joint_states": {"topic": self.joint_topic},
            "action": {
                "source": self.action.source,
                "topic": self.action.topic,
                "lead_s": self.action.lead_s,
            },
            "cameras": dict(self.cameras) if self.cameras is not None else None,
            "alignment": {"tolerance_s": self.tolerance_s},
            "episodes": {"split": self.split, "marker_topic": self.marker_topic},
            "task_topic": self.task_topic,
            "gripper": None if self.gripper is None else self.gripper.to_dict(),
        }


def _mapping(value: Any, key: str, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise SpecError(f"{where}: '{key}' must be a mapping, got {type(value).__name__}")
    return value


def _unknown(section: dict[str, Any], allowed: set[str], key: str, where: str) -> None:
    extra = sorted(set(section) - allowed)
    if extra:
        raise SpecError(f"{where}: unknown keys {extra} under '{key}' (allowed: {sorted(allowed)})")


def _topic(value: Any, key: str, where: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise SpecError(f"{where}: '{key}' must be a non-empty string, got {value!r}")
    return value.strip()


def parse_spec(raw: Any, where: str = "spec") -> DataSpec:
    """A DataSpec from the YAML document `raw` (a dict, or None for an empty file)."""
    doc = _mapping(raw, "the document", where)
    _unknown(doc, _KEYS, "the document", where)
    js = _mapping(doc.get("joint_states"), "joint_states", where)
    _unknown(js, {"topic"}, "joint_states", where)
    act = _mapping(doc.get("action"), "action", where)
    _unknown(act, {"source", "topic", "lead_s"}, "action", where)
    source = act.get("source", "commands")
    if source not in SOURCES:
        raise SpecError(f"{where}: action.source must be one of {list(SOURCES)}, got {source!r}")
    lead = act.get("lead_s")
    if lead is not None:
        if isinstance(lead, bool) or not isinstance(lead, (int, float)) or lead != lead:
            raise SpecError(f"{where}: action.lead_s must be a number of seconds, got {lead!r}")
        if source == "measured" and lead <= 0:
            raise SpecError(
                f"{where}: action.lead_s must be > 0 for the measured source (with 0 the action "
                "would equal the observation it is predicted from)"
            )
    cams_raw = doc.get("cameras")
    cams: dict[str, str] | None = None
    if cams_raw is not None:
        cams = {}
        for name, topic in _mapping(cams_raw, "cameras", where).items():
            t = _topic(topic, f"cameras.{name}", where)
            if t is None:
                raise SpecError(f"{where}: camera {name!r} has no topic")
            cams[str(name)] = t
    align = _mapping(doc.get("alignment"), "alignment", where)
    _unknown(align, {"tolerance_s"}, "alignment", where)
    tol = align.get("tolerance_s", DEFAULT_TOLERANCE_S)
    if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not tol > 0:
        raise SpecError(f"{where}: alignment.tolerance_s must be a positive number, got {tol!r}")
    eps = _mapping(doc.get("episodes"), "episodes", where)
    _unknown(eps, {"split", "marker_topic"}, "episodes", where)
    split = eps.get("split", "marker" if eps.get("marker_topic") else "bag")
    if split not in SPLITS:
        raise SpecError(f"{where}: episodes.split must be one of {list(SPLITS)}, got {split!r}")
    marker = _topic(eps.get("marker_topic"), "episodes.marker_topic", where)
    if split == "marker" and marker is None:
        raise SpecError(f"{where}: episodes.split 'marker' needs episodes.marker_topic")
    return DataSpec(
        joint_topic=_topic(js.get("topic"), "joint_states.topic", where),
        action=ActionSpec(
            source=source,
            topic=_topic(act.get("topic"), "action.topic", where),
            lead_s=None if lead is None else float(lead),
        ),
        cameras=cams,
        tolerance_s=float(tol),
        split=split,
        marker_topic=marker,
        task_topic=_topic(doc.get("task_topic"), "task_topic", where),
        gripper=_gripper(doc.get("gripper"), where),
        path=where if where != "spec" else None,
    )


def _gripper(raw: Any, where: str) -> GripperSpec | None:
    if raw is None:
        return None
    g = _mapping(raw, "gripper", where)
    _unknown(g, {"joints", "mapping", "source", "topic"}, "gripper", where)
    source = g.get("source", "commands")
    if source not in SOURCES:
        raise SpecError(f"{where}: gripper.source must be one of {list(SOURCES)}, got {source!r}")
    mapping = g.get("mapping", "width")
    if mapping not in MAPPINGS:
        raise SpecError(
            f"{where}: gripper.mapping must be one of {list(MAPPINGS)}, got {mapping!r}"
        )
    try:
        cfg = GripperConfig.from_dict(
            {"joints": g.get("joints", list(PANDA_FINGERS)), "mapping": mapping})
    except ValueError as exc:
        raise SpecError(f"{where}: {exc}") from exc
    return GripperSpec(tuple(cfg.joints), mapping, source, _topic(g.get("topic"), "gripper.topic",
                                                                   where))


def load_spec(path: str | os.PathLike[str] | None) -> DataSpec:
    """The spec in YAML file `path`, or the defaults when `path` is None."""
    if path is None:
        return DataSpec()
    import yaml

    p = os.fspath(path)
    try:
        with open(p, encoding="utf-8") as fh:
            raw = yaml.safe_load(fh)
    except FileNotFoundError as exc:
        raise SpecError(f"spec file not found: {p}") from exc
    except yaml.YAMLError as exc:
        raise SpecError(f"{p}: not valid YAML: {exc}") from exc
    return parse_spec(raw, where=p)
