"""Cartesian barrier values for the safety filter: workspace box, table plane, keep-out spheres,
grasp objects and self-collision sphere pairs, evaluated for every link sphere at once.

Tool and body: the spheres of the `tool_links` (the fingers) are the tool, every other moving
sphere the body. The tool keeps its own clearance over the floor (the table; `row_margins`) and
may touch a grasp object; a grasp object is a keep-out sphere for the body spheres only (it has
no rows for the tool at all). Everything else treats tool and body alike.

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
    and the table), then `obstacle_slots` keep-out spheres per moving sphere, then `grasp_slots`
    grasp objects per moving body sphere, then one row per self-collision sphere pair.
    """

    def __init__(
        self,
        robot: RobotModel,
        self_collision_pairs: Sequence[tuple[str, str]] | None = None,
        obstacle_slots: int = 0,
        tool_links: Sequence[str] | None = None,
        grasp_slots: int = 0,
    ) -> None:
        self.robot = robot
        self.moving = np.flatnonzero(robot.moving)
        self.radii = robot.sphere_radii[self.moving]
        groups = robot.sphere_groups
        known = set(groups)
        tools = [str(t) for t in tool_links or []]
        unknown = sorted(set(tools) - known)
        if unknown:
            raise ValueError(f"tool_links {unknown} carry no collision sphere")
        # per moving sphere: part of the tool? and the body spheres (grasp rows are theirs)
        self.tool = np.array([groups[s] in tools for s in self.moving], dtype=bool)
        self.body = self.moving[~self.tool]
        self.body_radii = robot.sphere_radii[self.body]
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
        self.lower = np.full(3, -math.inf)
        self.upper = np.full(3, math.inf)
        self.table_z = -math.inf
        self._bounds = self._face_bounds()
        self.obstacle_slots = 0
        self.obstacles: list[Sphere] = []
        self._centers = np.zeros((0, 3))
        self._oradii = np.zeros(0)
        self.grasp_slots = 0
        self.grasp_objects: list[Sphere] = []
        self._gcenters = np.zeros((0, 3))
        self._gradii = np.zeros(0)
        self._grasp_labels: list[str] = []
        self.resize(obstacle_slots, grasp_slots)
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
        return (self._n_faces + self.obstacle_slots * len(self.moving)
                + self.grasp_slots * len(self.body) + len(self.pair_a))

    def row_counts(self) -> dict[str, int]:
        """Barrier rows by kind (what `bench safety` reports, so a benchmark shows which
        constraints the measured filter carries): workspace faces and floor, keep-out slots,
        grasp-object slots (body spheres only), self-collision sphere pairs, and of all of
        these the rows that act on a tool sphere."""
        m = len(self.moving)
        tool_spheres = set(self.moving[self.tool].tolist())
        tool_pairs = sum(int(a in tool_spheres or b in tool_spheres)
                         for a, b in zip(self.pair_a.tolist(), self.pair_b.tolist(), strict=True))
        n_tool = int(self.tool.sum())
        return {"workspace_rows": self._n_faces, "obstacle_rows": self.obstacle_slots * m,
                "grasp_rows": self.grasp_slots * len(self.body),
                "self_collision_rows": len(self.pair_a),
                "tool_rows": n_tool * (6 + self.obstacle_slots) + tool_pairs}

    def row_margins(self, margin: float, tool_clearance: float,
                    grasp_margin: float) -> np.ndarray:
        """Per row, the clearance the filter keeps beyond the distance h: `margin` everywhere
        except the floor rows of the tool spheres, which keep `tool_clearance` (so the fingers
        may come close to the table while the links and the hand keep `margin`), and the
        grasp-object rows (body spheres only), which keep `grasp_margin`."""
        out = np.full(self.count, float(margin))
        out[6 * np.flatnonzero(self.tool) + 4] = float(tool_clearance)  # face 4: the floor
        g0 = self._n_faces + self.obstacle_slots * len(self.moving)
        out[g0:g0 + self.grasp_slots * len(self.body)] = float(grasp_margin)
        return out

    def _index_rows(self) -> None:
        """Fixed per-row index arrays, laid out once (and again when the obstacle slots grow).

        Per row: its sphere and the other sphere of a pair (else the fixed dummy S). Face rows
        read one coordinate of one sphere centre; the other rows (obstacles and pairs) are
        point-to-point distances between entries of a point table [sphere centres; obstacle
        centres], so one gather-subtract-norm covers both families.
        """
        m, s = len(self.moving), len(self.robot.sphere_radii)
        n_obs = self.obstacle_slots * m + self.grasp_slots * len(self.body)  # sphere-to-centre
        body_rows = np.tile(self.body, self.grasp_slots)
        self.row_sphere = np.concatenate([
            np.repeat(self.moving, 6), np.tile(self.moving, self.obstacle_slots), body_rows,
            self.pair_a,
        ]).astype(np.int64)
        self.row_other = np.full(len(self.row_sphere), s, dtype=np.int64)
        self._obs_rows = np.arange(6 * m, 6 * m + n_obs)
        self._pair_rows = np.arange(6 * m + n_obs, len(self.row_sphere))
        self.row_other[self._pair_rows] = self.pair_b
        count = len(self.row_sphere)
        self._normals = np.zeros((count, 3))
        axes = np.eye(3)[self._face_axis] * self._face_sign[:, None]  # [6, 3]
        self._normals[:6 * m] = np.tile(axes, (m, 1))
        self._face_idx = (3 * np.repeat(self.moving, 6) + np.tile(self._face_axis, m))
        self._face_sign_rows = np.tile(self._face_sign, m)
        self._face_radius = np.repeat(self.radii, 6)
        # point rows: entries of the point table [S sphere centres; obstacle centres]
        self._pt_a = np.concatenate([np.tile(self.moving, self.obstacle_slots), body_rows,
                                     self.pair_a])
        self._pt_b = np.concatenate([
            s + np.repeat(np.arange(self.obstacle_slots), m),
            s + np.repeat(np.arange(self.grasp_slots), len(self.body)), self.pair_b,
        ]).astype(np.int64)
        k = len(self._pt_a)
        # a - b for every point row in one product: +1 for a, -1 for b where b is a sphere;
        # obstacle centres enter as a per-row offset (refreshed when obstacles change)
        self._incidence = np.zeros((k, s))
        self._incidence[np.arange(k), self._pt_a] = 1.0
        spheres_b = self._pt_b < s
        self._incidence[np.flatnonzero(spheres_b), self._pt_b[spheres_b]] -= 1.0
        self._pt_offset = np.zeros((k, 3))
        self._da = np.empty((k, 3))
        self._db = np.empty((k, 3))
        self._dist = np.empty(k)
        self._ones3 = np.ones(3)
        self._h = np.empty(count)
        self._h_faces = self._h[:6 * m]
        self._h_points = self._h[6 * m:]
        self._normals_points = self._normals[6 * m:]
        self._n_faces = 6 * m
        self._refresh_constants()

    def _refresh_constants(self) -> None:
        """Per-row constants that change with the workspace or the obstacles: a face row is
        sign * p[axis] - (sign * bound + r); a point row is |a - b| - (r_a + r_b)."""
        if not hasattr(self, "_face_idx"):
            return
        m = len(self.moving)
        self._face_const = (self._face_sign_rows * np.tile(self._bounds, m)
                            + self._face_radius)
        n_obs = self.obstacle_slots * len(self.moving)
        n_grasp = self.grasp_slots * len(self.body)
        self._pt_offset[:n_obs] = -np.repeat(self._centers, len(self.moving), axis=0)
        self._pt_offset[n_obs:n_obs + n_grasp] = -np.repeat(self._gcenters, len(self.body),
                                                             axis=0)
        self._pt_rsum = np.concatenate([
            (self._oradii[:, None] + self.radii[None, :]).reshape(-1),
            (self._gradii[:, None] + self.body_radii[None, :]).reshape(-1), self.pair_r,
        ])

    def resize(self, slots: int, grasp_slots: int | None = None) -> None:
        """Reserve room for `slots` keep-out spheres and `grasp_slots` grasp objects (None:
        keep their number); the row count of the QP depends on both."""

        def grown(centers: np.ndarray, radii: np.ndarray, k: int) -> tuple[np.ndarray, ...]:
            c = np.full((k, 3), INACTIVE)  # empty slots: far away
            r = np.zeros(k)
            n = min(len(radii), k)
            c[:n], r[:n] = centers[:n], radii[:n]
            return c, r

        self.obstacle_slots = int(slots)
        self._centers, self._oradii = grown(self._centers, self._oradii, self.obstacle_slots)
        if grasp_slots is not None:
            self.grasp_slots = int(grasp_slots)
            self._gcenters, self._gradii = grown(self._gcenters, self._gradii, self.grasp_slots)
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
        self._refresh_constants()

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
        self._refresh_constants()
        self.obstacles = list(spheres)
        self._obstacle_labels = [s.name or f"obstacle{k}" for k, s in enumerate(spheres)]

    def set_grasp_objects(self, spheres: Sequence[Sphere]) -> None:
        """Replace the grasp objects (spheres the tool may touch and the body keeps out of);
        needs `len(spheres) <= grasp_slots` (resize first)."""
        checked = [check_sphere(s) for s in spheres]
        if len(checked) > self.grasp_slots:
            raise ValueError("more grasp objects than reserved slots")
        self._gcenters[:] = INACTIVE
        self._gradii[:] = 0.0
        for k, (c, r) in enumerate(checked):
            self._gcenters[k] = c
            self._gradii[k] = r
        self._refresh_constants()
        self.grasp_objects = list(spheres)
        self._grasp_labels = [s.name or f"grasp{k}" for k, s in enumerate(spheres)]

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
        row -= self.obstacle_slots * m
        mb = len(self.body)
        if row < self.grasp_slots * mb:
            k, s = divmod(row, mb)
            name = self._grasp_labels[k] if k < len(self._grasp_labels) else f"grasp_slot{k}"
            return f"{name}:{self.robot.sphere_groups[self.body[s]]}"
        return self._pair_labels[row - self.grasp_slots * mb]

    # ------------------------------------------------------------------ evaluation
    def _face_bounds(self) -> np.ndarray:
        floor = max(self.lower[2], self.table_z)
        lo = np.array([self.lower[0], self.lower[1], floor])
        bound = np.stack([lo, self.upper], axis=1).reshape(-1)  # x_lo, x_hi, y_lo, ...
        # a switched-off face sits INACTIVE metres beyond the sphere, whatever q is
        return np.where(np.isfinite(bound), bound, -self._face_sign * INACTIVE * 1e3)

    def distances(self, pos: np.ndarray) -> np.ndarray:
        """Distances h [C] of every row from the sphere centres pos [S, 3] alone (no Jacobians),
        into a buffer that the next call overwrites; keeps each row's unit normal for
        `gradients`. About a dozen numpy calls, whatever the number of rows."""
        pos = np.ascontiguousarray(pos, dtype=np.float64)
        h = self._h_faces
        pos.reshape(-1).take(self._face_idx, out=h, mode="clip")
        np.multiply(h, self._face_sign_rows, out=h)
        np.subtract(h, self._face_const, out=h)
        if len(self._pt_a):
            da, db, dist = self._da, self._db, self._dist
            np.matmul(self._incidence, pos, out=da)
            da += self._pt_offset
            np.multiply(da, da, out=db)
            np.dot(db, self._ones3, out=dist)
            np.sqrt(dist, out=dist)
            np.subtract(dist, self._pt_rsum, out=self._h_points)
            np.maximum(dist, 1e-9, out=dist)
            np.divide(da, dist[:, None], out=self._normals_points)
        return self._h

    def gradients(
        self,
        rows: np.ndarray,
        jp: np.ndarray,
        ra: np.ndarray | None = None,
        rb: np.ndarray | None = None,
        out: np.ndarray | None = None,
    ) -> np.ndarray:
        """Joint-space gradients G [len(rows), J] of the given rows: the row's unit normal times
        the difference of its two point Jacobians. Call `distances` first for the same pos;
        jp [S + 1, 3, J] are the sphere point Jacobians with the zero dummy last
        (`TickKinematics.jp`); ra, rb are `row_sphere[rows]`, `row_other[rows]` if known; `out`
        [len(rows), 1, J] receives the result (then returned as is)."""
        if ra is None:
            ra = self.row_sphere.take(rows)
        if rb is None:
            rb = self.row_other.take(rows)
        ja = jp.take(ra, axis=0)
        np.subtract(ja, jp.take(rb, axis=0), out=ja)
        normals = self._normals.take(rows, axis=0)
        if out is not None:
            return np.matmul(normals[:, None, :], ja, out=out)
        return np.matmul(normals[:, None, :], ja).reshape(len(rows), jp.shape[2])

    def row_errors(self, err: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Per-row first-order error bound from per-sphere bounds err [S] or [S, k]."""
        ext = np.concatenate([err, np.zeros((1, *err.shape[1:]))])
        return ext[self.row_sphere[rows]] + ext[self.row_other[rows]]

    def row_levers(self, lever: np.ndarray) -> np.ndarray:
        """Per-row bound on |G| per joint [C, J] from per-sphere lever arms [S, J]."""
        ext = np.concatenate([lever, np.zeros((1, lever.shape[1]))])
        return ext[self.row_sphere] + ext[self.row_other]

    def evaluate(
        self, pos: np.ndarray, jw: np.ndarray, err: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Distances h [C], gradients G [C, J] and first-order error bounds E [C] of all rows.

        pos [S,3] are the sphere centres and jw [6,J] the world-frame joint Jacobian from
        `RobotModel.kinematics`; err [S] (or [S, k]) bounds the error of p(q) + J dq against
        p(q + dq) for the joint excursion the filter considers.
        """
        h = self.distances(pos).copy()
        jp = np.concatenate([self.robot.point_jacobians(pos, jw),
                             np.zeros((1, 3, jw.shape[1]))])
        rows = np.arange(len(h))
        return h, self.gradients(rows, jp), self.row_errors(err, rows)

    def clearance(self, pos: np.ndarray) -> np.ndarray:
        """Distances h only, e.g. for checking a trajectory independently of the filter."""
        return self.distances(pos).copy()
