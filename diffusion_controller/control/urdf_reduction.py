"""A URDF read and reduced to the controlled joints: the pinocchio model RobotModel is built on.

Kept apart from robot_model.py (the filter's kinematics: spheres, Jacobians, bounds) because this
is the one-off, error-prone step before it: reading the URDF (XML or a path), checking the joints
the caller wants to control, and locking every other movable joint at a value, with a ValueError
that names what is wrong, since a URDF that is not what the arm is must never reach the filter.
"""

from __future__ import annotations

import math
import os
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence

import pinocchio as pin

BIG_LIMIT = 1e6  # joint limits beyond this are treated as unbounded


def read_urdf(urdf: str) -> str:
    """The URDF's XML, from the XML itself or from a file path."""
    text = urdf.lstrip()
    if text.startswith("<"):
        return urdf
    if not os.path.isfile(urdf):
        raise ValueError(f"URDF is neither XML nor an existing file: {urdf[:200]!r}")
    with open(urdf, encoding="utf-8") as fh:
        return fh.read()


def urdf_joint_info(xml: str) -> dict[str, dict[str, object]]:
    """Joint types and <limit> attributes from the XML (for the extra acceleration/jerk fields)."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        raise ValueError(f"URDF is not valid XML: {exc}") from exc
    info: dict[str, dict[str, object]] = {}
    for joint in root.iter("joint"):
        name = joint.get("name")
        if not name:
            continue
        limit = joint.find("limit")
        info[name] = {
            "type": joint.get("type", ""),
            "limit": dict(limit.attrib) if limit is not None else {},
        }
    return info


def reduce_urdf(
    urdf: str,
    joint_names: Sequence[str] | None = None,
    locked: Mapping[str, float] | None = None,
) -> tuple[pin.Model, list[str], dict[str, float], dict[str, dict[str, object]]]:
    """(reduced model, controlled joint names, locked values, URDF joint info) of a URDF.

    `joint_names` defaults to the URDF's revolute joints in document order. Every other movable
    joint is locked: at `locked[name]` if given, else at the middle of its range (else 0 when it
    is unbounded). Raises ValueError naming the problem.
    """
    xml = read_urdf(urdf)
    info = urdf_joint_info(xml)
    try:
        full = pin.buildModelFromXML(xml)
    except Exception as exc:  # pinocchio raises a bare RuntimeError/ValueError
        raise ValueError(f"pinocchio could not parse the URDF: {exc}") from exc
    movable = list(full.names)[1:]
    if joint_names is None:
        joint_names = [name for name, jinfo in info.items() if jinfo["type"] == "revolute"]
    joint_names = [str(n) for n in joint_names]
    if not joint_names:
        raise ValueError("no joints to control: the URDF has no revolute joints")
    if len(set(joint_names)) != len(joint_names):
        raise ValueError(f"duplicate joint names in {joint_names}")
    fixed = [n for n in joint_names if n in info and n not in movable]
    unknown = [n for n in joint_names if n not in info]
    if unknown or fixed:
        parts = []
        if unknown:
            parts.append(f"unknown joints {unknown}")
        if fixed:
            parts.append(f"fixed joints {fixed} cannot be controlled")
        raise ValueError("; ".join(parts) + f" (movable joints: {movable})")
    for name in joint_names:
        jid = full.getJointId(name)
        if full.joints[jid].nq != 1 or full.joints[jid].nv != 1:
            raise ValueError(
                f"joint {name!r} has {full.joints[jid].nq} position coordinates; only "
                "revolute and prismatic joints can be controlled"
            )
    locked = dict(locked or {})
    bad = [n for n in locked if n not in movable]
    if bad:
        raise ValueError(f"cannot lock unknown or fixed joints {bad} (movable: {movable})")
    both = [n for n in locked if n in joint_names]
    if both:
        raise ValueError(f"joints {both} are both controlled and locked")
    q_ref = pin.neutral(full)
    lock_ids: list[int] = []
    resolved: dict[str, float] = {}
    for name in movable:
        if name in joint_names:
            continue
        jid = full.getJointId(name)
        joint = full.joints[jid]
        lock_ids.append(jid)
        if joint.nq != 1:
            if name in locked:
                raise ValueError(f"joint {name!r} has {joint.nq} coordinates: cannot lock it")
            continue  # locked at pinocchio's neutral
        lo = float(full.lowerPositionLimit[joint.idx_q])
        hi = float(full.upperPositionLimit[joint.idx_q])
        if name in locked:
            value = float(locked[name])
            if not math.isfinite(value):
                raise ValueError(f"locked value for {name!r} is not finite")
            if value < lo - 1e-9 or value > hi + 1e-9:
                raise ValueError(f"locked value {value} for {name!r} outside [{lo}, {hi}]")
        elif abs(lo) < BIG_LIMIT and abs(hi) < BIG_LIMIT:
            value = 0.5 * (lo + hi)
        else:
            value = 0.0
        q_ref[joint.idx_q] = value
        resolved[name] = value
    reduced = pin.buildReducedModel(full, lock_ids, q_ref) if lock_ids else full
    return reduced, joint_names, resolved, info
