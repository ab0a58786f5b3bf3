"""The first pass over a rosbag2 recording: which topics a spec needs, and their messages.

`plan_for` turns a DataSpec (plus the reader's keyword defaults) into concrete topics;
`check_topics` says what is missing or of the wrong type; `collect` reads every needed message
once into align.Stream objects (positions for joints and actions, ordinals for images, so that
only the frames a grid uses are decoded later).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from diffusion_controller.data.align import Stream
from diffusion_controller.data.bag_writer import (
    BOOL,
    DEFAULT_CAMERAS,
    DEFAULT_TOPICS,
    FLOAT64_ARRAY,
    JOINT_STATE,
    STRING,
    TRAJECTORY,
)
from diffusion_controller.data.images import IMAGE_TYPES
from diffusion_controller.data.spec import DataSpec, GripperSpec

ACTION_TYPES = {"commands": FLOAT64_ARRAY, "trajectory": TRAJECTORY}
_NS = 1_000_000_000


@dataclass(frozen=True)
class Plan:
    """Concrete topics for one read: the spec with every default filled in."""

    joint_topic: str
    source: str
    action_topic: str
    cameras: dict[str, str]
    task_topic: str
    marker_topic: str | None
    tolerance_s: float
    lead_s: float
    gripper: GripperSpec | None = None
    gripper_topic: str | None = None  # the gripper's action topic (None: no gripper)

    def joint_names(self, arm: Sequence[str]) -> list[str]:
        """The joints read from the joint states: the arm's, then the gripper's."""
        return [*arm, *(self.gripper.joints if self.gripper is not None else ())]

    def required(self) -> dict[str, tuple[str, ...]]:
        """Topic -> acceptable message types."""
        need: dict[str, tuple[str, ...]] = {self.joint_topic: (JOINT_STATE,)}
        if self.source in ACTION_TYPES:
            need[self.action_topic] = (ACTION_TYPES[self.source],)
        if self.gripper is not None and self.gripper.source in ACTION_TYPES:
            assert self.gripper_topic is not None
            need[self.gripper_topic] = (ACTION_TYPES[self.gripper.source],)
        for topic in self.cameras.values():
            need[topic] = IMAGE_TYPES
        return need


def plan_for(
    spec: DataSpec | None,
    action_dt: float,
    cameras: Mapping[str, str] | None,
    joint_topic: str = DEFAULT_TOPICS["joint_states"],
    command_topic: str = DEFAULT_TOPICS["commands"],
    task_topic: str = DEFAULT_TOPICS["task"],
) -> Plan:
    spec = spec or DataSpec()
    joints = spec.joint_topic or joint_topic
    source = spec.action.source
    if spec.action.topic:
        action = spec.action.topic
    elif source == "commands":
        action = command_topic
    else:
        action = spec.action_topic(joints)
    if spec.cameras is not None:
        cams = dict(spec.cameras)
    else:
        cams = dict(DEFAULT_CAMERAS if cameras is None else cameras)
    return Plan(
        joint_topic=joints,
        source=source,
        action_topic=action,
        cameras=cams,
        task_topic=spec.task_topic or task_topic,
        marker_topic=spec.marker_topic if spec.split == "marker" else None,
        tolerance_s=spec.tolerance_s,
        lead_s=spec.action.resolved_lead(action_dt),
        gripper=spec.gripper,
        gripper_topic=None if spec.gripper is None else spec.gripper.action_topic(joints),
    )


def check_topics(plan: Plan, types: Mapping[str, str], where: str) -> list[str]:
    """Problems with the recording's topics for this plan ([] when it can be read)."""
    problems = []
    need = plan.required()
    if plan.marker_topic:
        need[plan.marker_topic] = ()
    missing = [t for t in need if t not in types]
    if missing:
        problems.append(f"bag {where} lacks topics {missing}; it has {sorted(types)}")
    for topic, accepted in need.items():
        if topic in types and accepted and types[topic] not in accepted:
            want = " or ".join(accepted)
            problems.append(f"{topic} in {where} is {types[topic]}, expected {want}")
    return problems


@dataclass
class Collected:
    """Everything the first pass kept."""

    joints: Stream
    action: Stream | None  # None for the measured source (the joints are the actions)
    images: dict[str, Stream]
    marker: Stream | None
    task_texts: list[str] = field(default_factory=list)
    seen_names: set[str] = field(default_factory=set)
    gripper: Stream | None = None  # the gripper's commands (None: none, or measured)

    def aligned(self) -> list[Stream]:
        """The streams whose clocks must agree."""
        acts = [s for s in (self.action, self.gripper) if s is not None]
        return [self.joints, *acts, *self.images.values()]


def _ns(stamp: Any) -> int:
    return int(stamp.sec) * _NS + int(stamp.nanosec)


def joint_positions(msg: Any, names: Sequence[str]) -> np.ndarray | None:
    """Positions of `names` (by name) from a JointState, or None when unusable."""
    index = {n: i for i, n in enumerate(msg.name)}
    pos = np.asarray(msg.position, dtype=np.float64)
    if any(n not in index for n in names) or len(pos) < len(msg.name):
        return None
    q = pos[[index[n] for n in names]]
    return q if np.all(np.isfinite(q)) else None


def trajectory_point(msg: Any, names: Sequence[str]) -> tuple[np.ndarray, int] | None:
    """(positions by name, time_from_start ns) of a JointTrajectory's first point, or None."""
    if not len(msg.points):
        return None
    point = msg.points[0]
    pos = np.asarray(point.positions, dtype=np.float64)
    index = {n: i for i, n in enumerate(msg.joint_names)}
    if any(n not in index for n in names) or len(pos) < len(msg.joint_names):
        return None
    q = pos[[index[n] for n in names]]
    if not np.all(np.isfinite(q)):
        return None
    return q, _ns(point.time_from_start)


def _action_message(
    msg: Any, t_recv: int, source: str, names: Sequence[str], stream: Stream
) -> None:
    """A command (by position in `names` order) or a trajectory's first point (by name)."""
    if source == "commands":
        data = np.asarray(msg.data, dtype=np.float64)
        if data.shape != (len(names),) or not np.all(np.isfinite(data)):
            stream.skipped += 1
        else:
            stream.add(0, t_recv, data)
        return
    got = trajectory_point(msg, names)
    if got is None:
        stream.skipped += 1
    else:
        stream.add(_ns(msg.header.stamp), t_recv, got[0], delay=got[1])


def collect(reader: Any, ts: Any, plan: Plan, names: Sequence[str]) -> Collected:
    """One pass over the needed topics (corrupt or unusable messages counted, not fatal).

    `names` are the arm's joints; with a gripper the joint stream holds the arm's joints and then
    the gripper's (Plan.joint_names), and the gripper's commands form a stream of their own."""
    arm = list(names)
    names = plan.joint_names(arm)
    joints = Stream(plan.joint_topic)
    action = (
        Stream(plan.action_topic, has_header=plan.source == "trajectory")
        if plan.source in ACTION_TYPES
        else None
    )
    g = plan.gripper
    gripper = (
        Stream(plan.gripper_topic, has_header=g.source == "trajectory")
        if g is not None and plan.gripper_topic is not None and g.source in ACTION_TYPES
        else None
    )
    images = {cam: Stream(topic) for cam, topic in plan.cameras.items()}
    cam_of = {topic: cam for cam, topic in plan.cameras.items()}
    marker = Stream(plan.marker_topic, has_header=False) if plan.marker_topic else None
    out = Collected(joints, action, images, marker, gripper=gripper)
    wanted = set(plan.required()) | {plan.task_topic}
    if plan.marker_topic:
        wanted.add(plan.marker_topic)
    conns = [c for c in reader.connections if c.topic in wanted]
    for conn, t_recv, raw in reader.messages(connections=conns):
        topic = conn.topic
        try:
            msg = ts.deserialize_cdr(raw, conn.msgtype)
        except Exception:  # a corrupt message must not sink the whole recording
            for s in (joints, action, gripper, marker, images.get(cam_of.get(topic, ""))):
                if s is not None and s.topic == topic:
                    s.skipped += 1
            continue
        if topic == plan.joint_topic:
            out.seen_names.update(msg.name)
            q = joint_positions(msg, names)
            if q is None:
                joints.skipped += 1
            else:
                joints.add(_ns(msg.header.stamp), t_recv, q)
        if action is not None and topic == plan.action_topic:
            _action_message(msg, t_recv, plan.source, arm, action)
        if gripper is not None and g is not None and topic == plan.gripper_topic:
            _action_message(msg, t_recv, g.source, list(g.joints), gripper)
        if topic in cam_of:
            stream = images[cam_of[topic]]
            stream.add(_ns(msg.header.stamp), t_recv, len(stream.values))
        if marker is not None and topic == plan.marker_topic:
            value = bool(msg.data) if conn.msgtype == BOOL else None
            stamp = getattr(msg, "header", None)
            marker.has_header = stamp is not None
            marker.add(0 if stamp is None else _ns(stamp.stamp), t_recv, value)
        if topic == plan.task_topic and conn.msgtype == STRING:
            out.task_texts.append(str(msg.data))
    return out
