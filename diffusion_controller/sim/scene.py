"""The task's objects in the simulated world: building, clearing and querying them.

Part of SimWorld (sim/world.py; the attributes are its own, set in its __init__): the reach task's
red obstacle and green target disc, the pick-and-place task's red cube (a dynamic body the hand may
touch) and yellow bins (static, like the table). Kept apart so world.py holds the arm, the hand,
the camera and the stepping, and each task's scene is read in one place.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import pybullet as p

from diffusion_controller.sim.task import TaskSpec

OBSTACLE_RGBA = (0.9, 0.05, 0.05, 1.0)  # saturated red
TARGET_RGBA = (0.05, 0.85, 0.1, 1.0)  # saturated green
CUBE_RGBA = (0.9, 0.05, 0.05, 1.0)  # saturated red
BIN_RGBA = (0.95, 0.8, 0.05, 1.0)  # saturated yellow


class TaskScene:
    """SimWorld's task objects (pybullet bodies on its physicsClientId `cid`)."""

    def _build_reach(self, spec: TaskSpec) -> None:
        """The reach task's red obstacle and green target disc."""
        pid = self.cid
        ob = spec.obstacle
        col = p.createCollisionShape(
            p.GEOM_CYLINDER, radius=ob.radius, height=ob.height, physicsClientId=pid
        )
        vis = p.createVisualShape(
            p.GEOM_CYLINDER,
            radius=ob.radius,
            length=ob.height,
            rgbaColor=OBSTACLE_RGBA,
            physicsClientId=pid,
        )
        self.obstacle = p.createMultiBody(
            0.0, col, vis, basePosition=[ob.x, ob.y, ob.height / 2], physicsClientId=pid
        )
        # The target is only paint on the table: visible, never collided with.
        tvis = p.createVisualShape(
            p.GEOM_CYLINDER,
            radius=spec.target_radius,
            length=0.002,
            rgbaColor=TARGET_RGBA,
            physicsClientId=pid,
        )
        self.target_marker = p.createMultiBody(
            0.0,
            -1,
            tvis,
            basePosition=[spec.target[0], spec.target[1], spec.target[2] + 0.001],
            physicsClientId=pid,
        )

    def _build_pick_place(self, spec: Any) -> None:
        """The pick-and-place task's red cube (dynamic) and yellow bins (static walls)."""
        pid = self.cid
        c = self.config
        half = spec.cube_size / 2
        col = p.createCollisionShape(p.GEOM_BOX, halfExtents=[half] * 3, physicsClientId=pid)
        vis = p.createVisualShape(
            p.GEOM_BOX, halfExtents=[half] * 3, rgbaColor=CUBE_RGBA, physicsClientId=pid
        )
        self.cube = p.createMultiBody(
            spec.cube_mass, col, vis, basePosition=list(spec.cube), physicsClientId=pid
        )
        p.changeDynamics(
            self.cube, -1, lateralFriction=c.finger_friction, spinningFriction=0.001,
            rollingFriction=0.0, physicsClientId=pid,
        )  # fmt: skip
        for b in spec.bins:
            t, h, r = b.wall_thickness / 2, b.wall_height / 2, b.inner_half + b.wall_thickness / 2
            # Four walls: two along x at y +- r, two along y at x +- r, meeting at the corners.
            walls = [
                ([r + t, t, h], [0.0, r, h]), ([r + t, t, h], [0.0, -r, h]),
                ([t, r + t, h], [r, 0.0, h]), ([t, r + t, h], [-r, 0.0, h]),
            ]  # fmt: skip
            shapes = [p.createCollisionShape(p.GEOM_BOX, halfExtents=e, physicsClientId=pid)
                      for e, _ in walls]  # fmt: skip
            visuals = [
                p.createVisualShape(p.GEOM_BOX, halfExtents=e, rgbaColor=BIN_RGBA,
                                    physicsClientId=pid)
                for e, _ in walls
            ]  # fmt: skip
            body = p.createMultiBody(
                0.0, -1, -1, basePosition=[b.x, b.y, 0.0],
                linkMasses=[0.0] * 4, linkCollisionShapeIndices=shapes,
                linkVisualShapeIndices=visuals, linkPositions=[o for _, o in walls],
                linkOrientations=[[0.0, 0.0, 0.0, 1.0]] * 4,
                linkInertialFramePositions=[[0.0, 0.0, 0.0]] * 4,
                linkInertialFrameOrientations=[[0.0, 0.0, 0.0, 1.0]] * 4,
                linkParentIndices=[0] * 4, linkJointTypes=[p.JOINT_FIXED] * 4,
                linkJointAxis=[[0.0, 0.0, 1.0]] * 4, physicsClientId=pid,
            )  # fmt: skip
            self.bins[body] = b.name

    def _clear_scene(self) -> None:
        pid = self.cid
        for body in (self.obstacle, self.target_marker, self.cube, *self.bins):
            if body is not None:
                p.removeBody(body, physicsClientId=pid)
        self.obstacle = self.target_marker = self.cube = None
        self.bins = {}

    def cube_state(self) -> tuple[np.ndarray, np.ndarray]:
        """(position [3], linear velocity [3]) of the cube; raises ValueError without one."""
        if self.cube is None:
            raise ValueError("no cube in this scene")
        pos, _ = p.getBasePositionAndOrientation(self.cube, physicsClientId=self.cid)
        vel, _ = p.getBaseVelocity(self.cube, physicsClientId=self.cid)
        return np.array(pos), np.array(vel)

    def fingers_touching_cube(self) -> int:
        """How many of the two fingers touch the cube now (0, 1 or 2)."""
        if self.cube is None:
            return 0
        return sum(
            bool(p.getContactPoints(self.robot, self.cube, linkIndexA=j, physicsClientId=self.cid))
            for j in self.finger_idx
        )

    def move_obstacle(self, x: float, y: float) -> TaskSpec:
        """Slide the obstacle to (x, y) on the table (a scene change during an episode).

        Returns the task with the moved obstacle, which becomes `self.spec`. Raises ValueError
        for non-finite coordinates or when there is no task (no obstacle) yet.
        """
        if self.spec is None or self.obstacle is None:
            raise ValueError("no obstacle to move: reset the world with a task first")
        if not (math.isfinite(x) and math.isfinite(y)):
            raise ValueError(f"obstacle position must be finite, got ({x}, {y})")
        ob = self.spec.obstacle
        p.resetBasePositionAndOrientation(
            self.obstacle, [x, y, ob.height / 2], [0.0, 0.0, 0.0, 1.0], physicsClientId=self.cid
        )
        self.spec = dataclasses.replace(
            self.spec, obstacle=dataclasses.replace(ob, x=float(x), y=float(y))
        )
        return self.spec

    def min_clearance(self) -> float:
        """Closest distance (m) between any arm link and the obstacle; negative when penetrating."""
        if self.obstacle is None:
            return math.inf
        pts = p.getClosestPoints(
            self.robot, self.obstacle, self.config.clearance_range, physicsClientId=self.cid
        )
        return min((pt[8] for pt in pts), default=self.config.clearance_range)

    def clearance_along(self, path: np.ndarray) -> np.ndarray:
        """Obstacle and table clearance of the arm at each configuration of `path` [N, 7].

        A kinematic query for planners: the arm is placed at each configuration without stepping
        physics, then the simulation state is restored exactly. Returns [N, 2] (obstacle, table);
        the table column ignores the base, which stands on it.
        """
        pid = self.cid
        saved = p.saveState(physicsClientId=pid)
        out = np.full((len(path), 2), self.config.clearance_range)
        try:
            for i, q in enumerate(np.asarray(path, dtype=np.float64)):
                for j, qj in zip(self.arm_idx, q, strict=False):
                    p.resetJointState(self.robot, j, float(qj), 0.0, physicsClientId=pid)
                for col, body in enumerate((self.obstacle, self.table)):
                    if body is None:
                        continue
                    pts = p.getClosestPoints(
                        self.robot, body, self.config.clearance_range, physicsClientId=pid
                    )
                    out[i, col] = min(
                        (pt[8] for pt in pts if pt[3] != -1),
                        default=self.config.clearance_range,
                    )
        finally:
            p.restoreState(saved, physicsClientId=pid)
            p.removeState(saved, physicsClientId=pid)
        return out
