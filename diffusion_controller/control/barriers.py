"""Cartesian barrier values for the safety filter: workspace box, table plane, keep-out spheres and
self-collision sphere pairs, evaluated for every link sphere at once.

Each barrier is a distance h(q) (metres, positive when safe) with its joint-space gradient
G = dh/dq. The filter turns them into braking-distance-aware rows; this module only supplies h, G
and, per row, a bound E on how far a first-order prediction of h can be off for a given joint
excursion (from the robot model's second-order kinematic bounds). Rows are laid out once, in a
fixed order, so the QP's sparsity pattern never changes; barriers that are switched off keep their
rows with a distance far beyond reach.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from diffusion_controller.control.robot_model import RobotModel
from diffusion_controller.control.types import Sphere

INACTIVE = 1.0e3  # metres: the distance given to a switched-off barrier row


def check_sphere(sphere: Sphere) -> tuple[np.ndarray, float]:
    """A keep-out sphere's centre and radius, validated (finite centre, radius >= 0)."""
    center = np.asarray(sphere.center, dtype=np.float64).reshape(-1)
    radius = float(sphere.radius)
    if center.shape != (3,) or not np.all(np.isfinite(center)):
        raise ValueError(f"obstacle {sphere.name!r}: centre must be 3 finite values")
    if not math.isfinite(radius) or radius < 0:
        raise ValueError(f"obstacle {sphere.name!r}: radius must be finite and >= 0")
    return center, radius


class CartesianBarriers:
    """Barrier rows for the moving link spheres of `robot`.

    Row layout: 6 workspace faces per moving sphere (the floor face is the higher of the box floor
    and the table), then `obstacle_slots` keep-out spheres per moving sphere, then one row per
    self-collision sphere pair.
    """

    def __init__(
        self,
        robot: RobotModel,
        self_collision_pairs: Sequence[tuple[str, str]] | None = None,
        obstacle_slots: int = 0,
    ) -> None:
        self.robot = robot
        self.moving = np.flatnonzero(robot.moving)
        self.radii = robot.sphere_radii[self.moving]
        groups = robot.sphere_groups
        known = set(groups)
        pa: list[int] = []
        pb: list[int] = []
        for pair in self_collision_pairs or []:
            if len(pair) != 2:
                raise ValueError(f"self-collision pair must name two sphere groups: {pair}")
            ga, gb = str(pair[0]), str(pair[1])
            missing = [g for g in (ga, gb) if g not in known]
            if missing:
                raise ValueError(f"self-collision pair {pair}: no spheres on {missing}")
            if ga == gb:
                raise ValueError(f"self-collision pair {pair} pairs a group with itself")
            for i, g in enumerate(groups):
                if g != ga:
                    continue
                for j, h in enumerate(groups):
                    if h == gb and (robot.moving[i] or robot.moving[j]):
                        pa.append(i)
                        pb.append(j)
        self.pair_a = np.asarray(pa, dtype=np.int64)
        self.pair_b = np.asarray(pb, dtype=np.int64)
        self.pair_r = robot.sphere_radii[self.pair_a] + robot.sphere_radii[self.pair_b]
        self._face_sign = np.array([1.0, -1.0, 1.0, -1.0, 1.0, -1.0])
        self._face_axis = np.array([0, 0, 1, 1, 2, 2])
        self._mask = robot._sphere_mask[:, None, :]
        self.lower = np.full(3, -math.inf)
        self.upper = np.full(3, math.inf)
        self.table_z = -math.inf
        self._bounds = self._face_bounds()
        self.obstacle_slots = 0
        self.obstacles: list[Sphere] = []
        self._centers = np.zeros((0, 3))
        self._oradii = np.zeros(0)
        self.resize(obstacle_slots)
        m = len(self.moving)
        self.labels = (
            [f"{face}:{groups[s]}" for s in self.moving for face in
             ("x_min", "x_max", "y_min", "y_max", "floor", "z_max")]
        )
        self._n_faces = 6 * m
        self._pair_labels = [f"self:{groups[a]}/{groups[b]}" for a, b in zip(pa, pb, strict=False)]

    # ------------------------------------------------------------------ configuration
    @property
    def count(self) -> int:
        return self._n_faces + self.obstacle_slots * len(self.moving) + len(self.pair_a)

    def _index_rows(self) -> None:
        self._row_sphere = np.concatenate([
            np.repeat(self.moving, 6), np.tile(self.moving, self.obstacle_slots), self.pair_a,
        ]).astype(np.int64)

    def resize(self, slots: int) -> None:
        """Reserve room for `slots` keep-out spheres (the row count of the QP depends on it)."""
        self.obstacle_slots = int(slots)
        centers = np.full((self.obstacle_slots, 3), INACTIVE)  # empty slots: far away
        radii = np.zeros(self.obstacle_slots)
        n = min(len(self._oradii), self.obstacle_slots)
        centers[:n] = self._centers[:n]
        radii[:n] = self._oradii[:n]
        self._centers, self._oradii = centers, radii
        self._index_rows()

    def set_workspace(
        self,
        lower: Sequence[float] | None,
        upper: Sequence[float] | None,
        table_z: float | None,
    ) -> None:
        lo = np.full(3, -math.inf) if lower is None else np.asarray(lower, dtype=np.float64)
        hi = np.full(3, math.inf) if upper is None else np.asarray(upper, dtype=np.float64)
        if lo.shape != (3,) or hi.shape != (3,) or np.any(np.isnan(lo)) or np.any(np.isnan(hi)):
            raise ValueError("workspace_min/workspace_max must be 3 values (xyz, base frame)")
        if np.any(lo >= hi):
            raise ValueError(f"workspace_min {lo.tolist()} must be below workspace_max")
        tz = -math.inf if table_z is None else float(table_z)
        if math.isnan(tz) or tz == math.inf:
            raise ValueError("table_z must be a finite height or None")
        self.lower, self.upper, self.table_z = lo, hi, tz
        self._bounds = self._face_bounds()

    def set_obstacles(self, spheres: Sequence[Sphere]) -> None:
        """Replace the keep-out spheres; needs `len(spheres) <= obstacle_slots` (resize first)."""
        checked = [check_sphere(s) for s in spheres]
        if len(checked) > self.obstacle_slots:
            raise ValueError("more obstacles than reserved slots")
        self._centers[:] = INACTIVE
        self._oradii[:] = 0.0
        for k, (c, r) in enumerate(checked):
            self._centers[k] = c
            self._oradii[k] = r
        self.obstacles = list(spheres)
        self._obstacle_labels = [s.name or f"obstacle{k}" for k, s in enumerate(spheres)]

    def row_label(self, row: int) -> str:
        m = len(self.moving)
        if row < self._n_faces:
            return self.labels[row]
        row -= self._n_faces
        if row < self.obstacle_slots * m:
            k, s = divmod(row, m)
            names = getattr(self, "_obstacle_labels", [])
            name = names[k] if k < len(names) else f"slot{k}"
            return f"{name}:{self.robot.sphere_groups[self.moving[s]]}"
        return self._pair_labels[row - self.obstacle_slots * m]

    # ------------------------------------------------------------------ evaluation
    def _face_bounds(self) -> np.ndarray:
        floor = max(self.lower[2], self.table_z)
        lo = np.array([self.lower[0], self.lower[1], floor])
        bound = np.stack([lo, self.upper], axis=1).reshape(-1)  # x_lo, x_hi, y_lo, ...
        # a switched-off face sits INACTIVE metres beyond the sphere, whatever q is
        return np.where(np.isfinite(bound), bound, -self._face_sign * INACTIVE * 1e3)

    def evaluate(
        self, pos: np.ndarray, jw: np.ndarray, err: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Distances h [C], gradients G [C, J] and first-order error bounds E [C].

        pos [S,3] are the sphere centres and jw [6,J] the world-frame joint Jacobian from
        `RobotModel.kinematics`; err [S] bounds the error of p(q) + J dq against p(q + dq) for
        the joint excursion the filter considers.
        """
        mv = self.moving
        jall = self._point_jacobians(pos, jw)  # [S, 3, J], zero for the fixed spheres
        p, jp = pos[mv], jall[mv]
        # faces: x_min, x_max, y_min, y_max, floor, z_max, for each moving sphere
        h_face = self._face_sign * (p[:, self._face_axis] - self._bounds) - self.radii[:, None]
        g_face = jp[:, self._face_axis, :] * self._face_sign[None, :, None]  # [M, 6, J]
        nj = jw.shape[1]
        parts_h = [h_face.reshape(-1)]
        parts_g = [g_face.reshape(-1, nj)]

        if self.obstacle_slots:
            d = p[None, :, :] - self._centers[:, None, :]  # [O, M, 3]
            dist = np.sqrt(np.einsum("omk,omk->om", d, d))
            n = d / np.maximum(dist, 1e-9)[..., None]
            parts_h.append((dist - self.radii[None, :] - self._oradii[:, None]).reshape(-1))
            parts_g.append(np.einsum("omk,mkj->omj", n, jp).reshape(-1, nj))
        if len(self.pair_a):
            d = pos[self.pair_a] - pos[self.pair_b]
            dist = np.sqrt(np.einsum("pk,pk->p", d, d))
            n = d / np.maximum(dist, 1e-9)[:, None]
            parts_h.append(dist - self.pair_r)
            parts_g.append(np.einsum("pk,pkj->pj", n, jall[self.pair_a] - jall[self.pair_b]))
        e = err[self._row_sphere]
        if len(self.pair_a):
            e[-len(self.pair_a):] += err[self.pair_b]
        return np.concatenate(parts_h), np.concatenate(parts_g), e

    def _point_jacobians(self, p: np.ndarray, jw: np.ndarray) -> np.ndarray:
        w, lin = jw[3:], jw[:3]
        px, py, pz = p[:, 0:1], p[:, 1:2], p[:, 2:3]
        out = np.empty((p.shape[0], 3, jw.shape[1]))
        out[:, 0] = lin[0] + w[1] * pz - w[2] * py
        out[:, 1] = lin[1] + w[2] * px - w[0] * pz
        out[:, 2] = lin[2] + w[0] * py - w[1] * px
        out *= self._mask
        return out

    def clearance(self, pos: np.ndarray) -> np.ndarray:
        """Distances h only, e.g. for checking a trajectory independently of the filter."""
        return self.evaluate(pos, np.zeros((6, self.robot.nq)), np.zeros(pos.shape[0]))[0]
