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
        # [p]x = [[0, -z, y], [z, 0, -x], [-y, x, 0]], filled in place each tick
        self._skew = np.zeros((len(robot.sphere_radii), 9))
        self._skew_slots = np.array([1, 2, 3, 5, 6, 7])
        self._skew_src = np.array([2, 1, 2, 0, 1, 0])
        self._skew_sign = np.array([-1.0, 1.0, 1.0, -1.0, -1.0, 1.0])
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
        """Per row: its sphere, the other sphere of a pair (else a fixed dummy S), its normal."""
        m, s = len(self.moving), len(self.robot.sphere_radii)
        self._row_sphere = np.concatenate([
            np.repeat(self.moving, 6), np.tile(self.moving, self.obstacle_slots), self.pair_a,
        ]).astype(np.int64)
        self._row_other = np.full(len(self._row_sphere), s, dtype=np.int64)
        n_obs = self.obstacle_slots * m
        self._obs_rows = np.arange(6 * m, 6 * m + n_obs)
        self._pair_rows = np.arange(6 * m + n_obs, len(self._row_sphere))
        self._row_other[self._pair_rows] = self.pair_b
        self._normals = np.zeros((len(self._row_sphere), 3))
        axes = np.eye(3)[self._face_axis] * self._face_sign[:, None]  # [6, 3]
        self._normals[:6 * m] = np.tile(axes, (m, 1))

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

    def distances(self, pos: np.ndarray) -> np.ndarray:
        """Distances h [C] of every row from the sphere centres pos [S,3] alone (no Jacobians);
        keeps each row's unit normal for `gradients`."""
        p = pos[self.moving]
        # faces: x_min, x_max, y_min, y_max, floor, z_max, for each moving sphere
        parts = [(self._face_sign * (p[:, self._face_axis] - self._bounds)
                  - self.radii[:, None]).reshape(-1)]
        normals = self._normals
        if self.obstacle_slots:
            d = p[None, :, :] - self._centers[:, None, :]  # [O, M, 3]
            dist = np.sqrt(np.einsum("omk,omk->om", d, d))
            normals[self._obs_rows] = (d / np.maximum(dist, 1e-9)[..., None]).reshape(-1, 3)
            parts.append((dist - self.radii[None, :] - self._oradii[:, None]).reshape(-1))
        if len(self.pair_a):
            d = pos[self.pair_a] - pos[self.pair_b]
            dist = np.sqrt(np.einsum("pk,pk->p", d, d))
            normals[self._pair_rows] = d / np.maximum(dist, 1e-9)[:, None]
            parts.append(dist - self.pair_r)
        return np.concatenate(parts)

    def gradients(self, rows: np.ndarray, pos: np.ndarray, jw: np.ndarray) -> np.ndarray:
        """Joint-space gradients G [len(rows), J] of the given rows, from the distances'
        normals (call `distances` first for the same pos) and the world joint Jacobian jw."""
        jall = self._point_jacobians(pos, jw)  # [S+1, 3, J]: last is a fixed point
        jr = jall[self._row_sphere[rows]] - jall[self._row_other[rows]]
        return np.einsum("rk,rkj->rj", self._normals[rows], jr)

    def row_errors(self, err: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Per-row first-order error bound from per-sphere bounds err [S] or [S, k]."""
        ext = np.concatenate([err, np.zeros((1, *err.shape[1:]))])
        return ext[self._row_sphere[rows]] + ext[self._row_other[rows]]

    def row_levers(self, lever: np.ndarray) -> np.ndarray:
        """Per-row bound on |G| per joint [C, J] from per-sphere lever arms [S, J]."""
        ext = np.concatenate([lever, np.zeros((1, lever.shape[1]))])
        return ext[self._row_sphere] + ext[self._row_other]

    def evaluate(
        self, pos: np.ndarray, jw: np.ndarray, err: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Distances h [C], gradients G [C, J] and first-order error bounds E [C] of all rows.

        pos [S,3] are the sphere centres and jw [6,J] the world-frame joint Jacobian from
        `RobotModel.kinematics`; err [S] (or [S, k]) bounds the error of p(q) + J dq against
        p(q + dq) for the joint excursion the filter considers.
        """
        h = self.distances(pos)
        rows = np.arange(len(h))
        return h, self.gradients(rows, pos, jw), self.row_errors(err, rows)

    def _point_jacobians(self, p: np.ndarray, jw: np.ndarray) -> np.ndarray:
        """Point Jacobians lin + omega x p = lin - [p]x omega of every sphere centre, plus a
        fixed dummy point (zeros) at the end for rows with one moving sphere."""
        out = np.zeros((p.shape[0] + 1, 3, jw.shape[1]))
        skew = self._skew
        skew[:, self._skew_slots] = p[:, self._skew_src] * self._skew_sign
        out[:-1] = (jw[:3] - skew.reshape(-1, 3, 3) @ jw[3:]) * self._mask
        return out

    def clearance(self, pos: np.ndarray) -> np.ndarray:
        """Distances h only, e.g. for checking a trajectory independently of the filter."""
        return self.distances(pos)
