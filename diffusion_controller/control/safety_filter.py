"""The MPC/CBF safety filter: the last thing every joint command passes before it leaves the loop.

The filter owns the COMMANDED state (q, v, a), a double integrator at dt = 1 / rate_hz:

    q+ = q + v dt + u dt^2 / 2,    v+ = v + u dt,    a+ = u

and each tick picks u by a small QP solved with OSQP: follow the reference as closely as the
constraints allow. The guarantee is built around one braking profile (control/braking.py): every
state the filter commands is one from which braking at the acceleration limit stops

- inside the (tightened) joint position limits: exact per-joint bounds on u, and
- clear of the table, the workspace box, keep-out spheres and self-collision pairs, for every link
  sphere: a braking-distance-aware barrier B(x) = h(q) - (reach of the stop towards it) - margins,
  linearised at the current state with a bound on the linearisation error (from the robot model's
  second-order kinematic bounds), and held by the discrete CBF condition B(x+) >= (1 - gamma) B(x).

So when the QP is infeasible, the solver fails, or any input or intermediate value is not finite,
`brake()` is always a safe answer, and the QP itself is feasible whenever B(x) >= 0 (braking is a
solution). MPC mode plans N steps (tracking over the horizon, joint limits at every step, soft
terminal barrier rows) while keeping exactly the same first-step safety rows.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace

import numpy as np
import scipy.sparse as sp

from diffusion_controller.control.barriers import INACTIVE, CartesianBarriers
from diffusion_controller.control.braking import (
    brake_acceleration,
    upper_bounds,
    viability_bounds,
)
from diffusion_controller.control.limits import tighten
from diffusion_controller.control.qp import INFEASIBLE, SOLVED, SOLVED_INACCURATE, FixedPatternQP
from diffusion_controller.control.robot_model import RobotModel, manipulability_of
from diffusion_controller.control.types import FilterResult, JointLimits, Sphere

_SOLVER_SLACK_M = 1e-5  # metres the barrier rows are tightened by, to absorb OSQP's tolerance


@dataclass
class SafetyConfig:
    """Safety filter settings. Units: metres, radians, seconds."""

    rate_hz: float = 100.0
    """Tick rate of the commanded double integrator (dt = 1 / rate_hz)."""
    mode: str = "cbf"
    """"cbf": one-step QP over the next acceleration; "mpc": QP over `horizon` accelerations."""
    horizon: int = 10
    """MPC horizon in ticks (ignored in CBF mode)."""
    position_margin: float = 0.03
    """Radians kept clear of each URDF position limit."""
    velocity_scale: float = 0.9
    """Fraction of the URDF velocity limit the filter may command."""
    acceleration_scale: float = 0.8
    """Fraction of the acceleration limit (URDF or datasheet); braking uses this deceleration."""
    jerk_scale: float = 0.8
    """Fraction of the jerk limit; jerk yields when it conflicts with braking or other limits."""
    workspace_min: tuple[float, float, float] | None = None
    """Lower xyz corner of the box every link sphere must stay in (base frame); None: no box."""
    workspace_max: tuple[float, float, float] | None = None
    """Upper xyz corner of that box; None: no box."""
    table_z: float | None = 0.0
    """Height of the table plane: moving spheres stay above table_z + radius; None: no table."""
    obstacles: list[Sphere] = field(default_factory=list)
    """Keep-out spheres (base frame); change them while running with set_obstacles()."""
    sphere_margin: float = 0.01
    """Extra clearance (m) added to every Cartesian barrier; also covers motion between ticks."""
    barrier_gamma: float = 0.1
    """Discrete CBF decay in (0, 1]: B(x+) >= (1 - gamma) B(x); smaller approaches more gently."""
    self_collision_pairs: list[tuple[str, str]] | None = None
    """Pairs of sphere groups (link names) kept apart; None: none."""
    singularity: tuple[float, float] = (0.02, 0.005)
    """Yoshikawa manipulability where slow-down starts and where motion towards it stops."""
    tracking_kp: float = 400.0
    """Position gain (1/s^2) of the desired acceleration towards the reference."""
    tracking_kd: float = 40.0
    """Velocity gain (1/s) of the desired acceleration."""
    joint_weights: tuple[float, ...] | None = None
    """Per-joint weights of the tracking cost; None: all 1."""
    jerk_weight: float = 1e-3
    """Weight of (u - a_prev)^2 relative to tracking: smooths the command."""
    mpc_position_weight: float = 1e5
    """MPC: weight of position error over the horizon."""
    mpc_velocity_weight: float = 1e2
    """MPC: weight of velocity error over the horizon."""
    mpc_acceleration_weight: float = 1.0
    """MPC: weight of acceleration away from the reference acceleration."""
    eps_abs: float = 1e-2
    """OSQP absolute tolerance. Rows are in rad/s^2 (1e-2 moves a position by 5e-7 rad in a
    tick), and every solution is checked and repaired exactly, so a loose tolerance is safe."""
    eps_rel: float = 1e-2
    """OSQP relative tolerance."""
    max_iter: int = 250
    """OSQP iteration cap; reaching it counts as a solver failure (brake)."""
    time_limit: float = 0.0
    """OSQP time limit in seconds (0: none); reaching it counts as a solver failure (brake)."""
    intervention_tolerance: float = 0.05
    """rad/s^2: a command further than this from the unconstrained one counts as intervention."""
    barrier_slots: int = 24
    """QP rows for Cartesian barriers per step: the non-redundant ones, most critical first.
    Every barrier row is still checked after the solve; this only bounds the QP's size."""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        def positive(name: str) -> None:
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise ValueError(f"SafetyConfig.{name} must be a positive number, got {value!r}")

        for name in ("rate_hz", "tracking_kp", "tracking_kd", "eps_abs", "eps_rel",
                     "mpc_position_weight", "mpc_velocity_weight", "mpc_acceleration_weight",
                     "intervention_tolerance"):
            positive(name)
        if self.mode not in ("cbf", "mpc"):
            raise ValueError(f"SafetyConfig.mode must be 'cbf' or 'mpc', got {self.mode!r}")
        if not isinstance(self.horizon, int) or not 2 <= self.horizon <= 100:
            raise ValueError(f"SafetyConfig.horizon must be an int in [2, 100], got {self.horizon}")
        if not isinstance(self.barrier_slots, int) or not 1 <= self.barrier_slots <= 1000:
            raise ValueError("SafetyConfig.barrier_slots must be an int in [1, 1000]")
        if not isinstance(self.max_iter, int) or self.max_iter < 1:
            raise ValueError("SafetyConfig.max_iter must be a positive int")
        if not math.isfinite(self.time_limit) or self.time_limit < 0:
            raise ValueError("SafetyConfig.time_limit must be >= 0 (0: none)")
        if not math.isfinite(self.position_margin) or self.position_margin < 0:
            raise ValueError("SafetyConfig.position_margin must be finite and >= 0")
        for name in ("velocity_scale", "acceleration_scale", "jerk_scale"):
            value = getattr(self, name)
            if not math.isfinite(value) or not 0 < value <= 1:
                raise ValueError(f"SafetyConfig.{name} must be in (0, 1], got {value}")
        if not math.isfinite(self.sphere_margin) or self.sphere_margin < 0:
            raise ValueError("SafetyConfig.sphere_margin must be finite and >= 0")
        if not math.isfinite(self.barrier_gamma) or not 0 < self.barrier_gamma <= 1:
            raise ValueError("SafetyConfig.barrier_gamma must be in (0, 1]")
        if not math.isfinite(self.jerk_weight) or self.jerk_weight < 0:
            raise ValueError("SafetyConfig.jerk_weight must be finite and >= 0")
        sing = tuple(float(x) for x in self.singularity)
        if len(sing) != 2 or not all(math.isfinite(x) and x >= 0 for x in sing):
            raise ValueError("SafetyConfig.singularity must be (slow_down, stop) >= 0")
        if not sing[0] > sing[1]:
            raise ValueError("SafetyConfig.singularity: slow-down threshold must exceed stop")
        if self.joint_weights is not None:
            w = np.asarray(self.joint_weights, dtype=np.float64)
            if w.ndim != 1 or not np.all(np.isfinite(w)) or np.any(w <= 0):
                raise ValueError("SafetyConfig.joint_weights must be positive finite values")
        if self.table_z is not None and not math.isfinite(self.table_z):
            raise ValueError("SafetyConfig.table_z must be finite or None")


# Fields that can change while the filter runs; the others change the QP or the limits.
LIVE_FIELDS = frozenset({
    "workspace_min", "workspace_max", "table_z", "obstacles", "sphere_margin", "barrier_gamma",
    "singularity", "tracking_kp", "tracking_kd", "jerk_weight", "eps_abs", "eps_rel", "max_iter",
    "time_limit", "intervention_tolerance",
})


def _vec(value: object, n: int, name: str) -> tuple[np.ndarray | None, str]:
    """A finite float vector of length n, or (None, why not)."""
    try:
        arr = np.asarray(value, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        return None, f"{name} is not numeric"
    if arr.shape != (n,):
        return None, f"{name} has {arr.shape[0]} values, expected {n}"
    if not math.isfinite(arr.sum()):  # a NaN or an Inf anywhere makes the sum non-finite
        if np.all(np.isfinite(arr)):  # only overflow of a huge but finite sum
            return arr, ""
        return None, f"{name} is not finite"
    return arr, ""


class SafetyFilter:
    """Filters a reference (q, v, a) stream into commands that keep every safety guarantee.

    Thread-safe: step/brake (the loop) and the setters (e.g. ROS callbacks) share one lock.
    """

    def __init__(self, robot: RobotModel, config: SafetyConfig | None = None) -> None:
        self.robot = robot
        self.config = config if config is not None else SafetyConfig()
        self.config.validate()
        cfg = self.config
        self.n = robot.nq
        self.dt = 1.0 / cfg.rate_hz
        self._hard = robot.urdf_limits()
        self._limits = tighten(
            self._hard, cfg.position_margin, cfg.velocity_scale, cfg.acceleration_scale,
            cfg.jerk_scale,
        )
        if cfg.joint_weights is not None and len(cfg.joint_weights) != self.n:
            raise ValueError(f"joint_weights has {len(cfg.joint_weights)} values for {self.n}")
        self._weights = (
            np.ones(self.n) if cfg.joint_weights is None
            else np.asarray(cfg.joint_weights, dtype=np.float64)
        )
        self._lock = threading.RLock()
        self._barriers = CartesianBarriers(robot, cfg.self_collision_pairs, len(cfg.obstacles))
        self._barriers.set_workspace(cfg.workspace_min, cfg.workspace_max, cfg.table_z)
        self._barriers.set_obstacles(cfg.obstacles)
        self._q: np.ndarray | None = None
        self._v = np.zeros(self.n)
        self._a = np.zeros(self.n)
        self._qp: FixedPatternQP | None = None
        self._last_scale = 1.0
        self._curv_flat = 0.5 * robot.curvature.reshape(len(robot.sphere_radii), -1)
        self._top2 = np.concatenate((self._limits.upper, -self._limits.lower))
        self._b2 = np.concatenate((self._limits.acceleration, self._limits.acceleration))
        self._jerk_dt = self._limits.jerk * self.dt
        self._sel = np.zeros(0, dtype=np.int64)
        self._cand = np.zeros(0, dtype=np.int64)
        self._slots_used = 0
        self._n_selected = 0
        self._build()

    # ------------------------------------------------------------------ public state
    @property
    def limits(self) -> JointLimits:
        """The effective (tightened) joint limits every command stays within."""
        return self._limits

    @property
    def state(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The commanded (q, v, a) after the last tick (copies)."""
        with self._lock:
            if self._q is None:
                raise RuntimeError("SafetyFilter.reset(q) has not been called")
            return self._q.copy(), self._v.copy(), self._a.copy()

    @property
    def constraint_count(self) -> int:
        """Constraint rows enforced every tick: the QP's joint and split rows (all horizon rows in
        MPC mode) plus every Cartesian barrier row (each is in the QP or checked after it)."""
        with self._lock:
            return self._m - self._slots + self._barriers.count

    @property
    def qp_rows(self) -> int:
        """Rows of the OSQP problem itself (barrier rows enter through fixed slots)."""
        with self._lock:
            return self._m

    @property
    def barrier_count(self) -> int:
        """Cartesian barrier rows per step (workspace faces, obstacles, self-collision pairs)."""
        return self._barriers.count

    def reset(self, q: Sequence[float], v: Sequence[float] | None = None) -> None:
        """Start from a measured state (v defaults to 0); clears the acceleration.

        Raises ValueError if q or v is malformed or non-finite, outside the effective limits, or
        not able to stop inside the position limits: the filter cannot vouch for such a state.
        """
        qa, why = _vec(q, self.n, "q")
        if qa is None:
            raise ValueError(f"reset: {why}")
        if v is None:
            va = np.zeros(self.n)
        else:
            va, why = _vec(v, self.n, "v")
            if va is None:
                raise ValueError(f"reset: {why}")
        lim = self._limits
        out = [f"{n}={x:.4f} not in [{lo:.4f}, {hi:.4f}]" for n, x, lo, hi in
               zip(lim.names, qa, lim.lower, lim.upper, strict=False) if not lo <= x <= hi]
        if out:
            raise ValueError("reset: joints outside the safety position limits: " + "; ".join(out))
        fast = [f"{n}={x:.3f}" for n, x, vm in zip(lim.names, va, lim.velocity, strict=False)
                if abs(x) > vm]
        if fast:
            raise ValueError("reset: velocities above the safety limit: " + "; ".join(fast))
        lo, hi = viability_bounds(qa, va, lim.lower, lim.upper, lim.acceleration, self.dt)
        if np.any(lo > lim.acceleration + 1e-9) or np.any(hi < -lim.acceleration - 1e-9):
            raise ValueError("reset: a joint is too fast to stop inside its position limits")
        with self._lock:
            self._q, self._v, self._a = qa.copy(), va.copy(), np.zeros(self.n)
            if self._qp is not None:
                # set OSQP up now (a millisecond or more), not in the first control tick
                self._qp.reset()
                self._qp.solve(self._qvec, self._vals, self._lo, self._up)

    # ------------------------------------------------------------------ configuration
    def set_obstacles(self, spheres: Sequence[Sphere]) -> None:
        """Replace the keep-out spheres (centre and radius may change every tick)."""
        spheres = list(spheres)
        with self._lock:
            if len(spheres) > self._barriers.obstacle_slots:
                self._barriers.set_obstacles([])  # validates nothing yet; slots grow below
                self._barriers.resize(len(spheres))
                self._barriers.set_obstacles(spheres)
                self._build()
            else:
                self._barriers.set_obstacles(spheres)
            self.config.obstacles = spheres

    def set_workspace(
        self,
        workspace_min: Sequence[float] | None,
        workspace_max: Sequence[float] | None,
        table_z: float | None,
    ) -> None:
        """Replace the workspace box and the table height (None switches either off)."""
        with self._lock:
            self._barriers.set_workspace(workspace_min, workspace_max, table_z)
            self.config.workspace_min = None if workspace_min is None else tuple(workspace_min)
            self.config.workspace_max = None if workspace_max is None else tuple(workspace_max)
            self.config.table_z = table_z

    def update_config(self, **changes: object) -> None:
        """Change live-safe settings (see LIVE_FIELDS); others raise ValueError."""
        names = {f.name for f in fields(SafetyConfig)}
        unknown = sorted(set(changes) - names)
        if unknown:
            raise ValueError(f"unknown SafetyConfig fields {unknown}")
        fixed = sorted(set(changes) - LIVE_FIELDS)
        if fixed:
            raise ValueError(f"fields {fixed} cannot change while running: build a new filter")
        with self._lock:
            candidate = replace(self.config, **changes)  # validates
            if {"workspace_min", "workspace_max", "table_z"} & set(changes):
                self.set_workspace(candidate.workspace_min, candidate.workspace_max,
                                   candidate.table_z)
            if "obstacles" in changes:
                self.set_obstacles(candidate.obstacles)
            self.config = candidate
            if {"eps_abs", "eps_rel", "max_iter", "time_limit"} & set(changes):
                assert self._qp is not None
                self._qp.update_settings(**self._osqp_settings())

    def _osqp_settings(self) -> dict[str, float | int | bool]:
        cfg = self.config
        return {
            "eps_abs": cfg.eps_abs,
            "eps_rel": cfg.eps_rel,
            "max_iter": cfg.max_iter,
            "time_limit": cfg.time_limit if cfg.time_limit > 0 else 1e10,
            "polishing": False,
            "warm_starting": True,
            "check_termination": 5,
            "adaptive_rho": True,
            "scaling": 10,
        }

    # ------------------------------------------------------------------ QP layout
    def _build(self) -> None:
        """Lay out the QP once: variables, rows, the fixed pattern of A and the constant P.

        Barrier rows enter the QP through `barrier_slots` fixed rows: each tick the
        non-redundant barrier rows (those some admissible u could violate) fill them, most
        critical first; unused slots are switched off. Every barrier row is still checked
        after the solve, so a row that did not get a slot cannot be violated (see _repair).
        """
        self._slots = self.config.barrier_slots
        if self.config.mode == "cbf":
            self._build_cbf()
        else:
            self._build_mpc()

    def _build_cbf(self) -> None:
        n, k = self.n, self._slots
        # variables: u (n), s (n) with s >= |u|
        # rows: box u (n) | s - u >= 0 (n) | s + u >= 0 (n) | barrier slots (k) over (u, s)
        eye = np.arange(n)
        rows = [eye, n + eye, n + eye, 2 * n + eye, 2 * n + eye,
                3 * n + np.repeat(np.arange(k), 2 * n)]
        cols = [eye, n + eye, eye, n + eye, eye, np.tile(np.arange(2 * n), k)]
        self._m = 3 * n + k
        self._vals = np.concatenate([np.ones(n), np.ones(n), -np.ones(n), np.ones(n),
                                     np.ones(n), np.zeros(k * 2 * n)])
        self._slot_vals = self._vals[5 * n:].reshape(k, 2 * n)  # view
        self._slot_row0 = 3 * n
        w, rho = self._weights, self.config.jerk_weight
        # Half of the u curvature moves onto s: at the optimum s = |u| (every row prefers a
        # small s), so the cost is unchanged, and the QP becomes strongly convex in s too,
        # which ADMM needs to converge in few iterations.
        p_diag = np.concatenate([w + rho, w + rho])
        self._qp = FixedPatternQP(
            sp.diags(p_diag, format="csc"), np.concatenate(rows), np.concatenate(cols),
            self._m, self._osqp_settings(),
        )
        self._lo = np.full(self._m, -np.inf)
        self._up = np.full(self._m, np.inf)
        self._lo[n:3 * n] = 0.0
        self._qvec = np.zeros(2 * n)
        self._u_index = np.arange(n)

    def _build_mpc(self) -> None:
        cfg = self.config
        n, N, k, dt = self.n, cfg.horizon, self._slots, self.dt
        self._N = N
        nu = n * N  # u, joint-major: index i * N + step
        s0, d0, sig = nu, nu + n, nu + 2 * n
        nvar = nu + 2 * n + 1
        u0 = np.arange(n) * N
        # condensed dynamics per joint: q_k - q0 - k dt v0 = dt^2 sum_{j<k} (k-j-1/2) u_j
        kk = np.arange(1, N + 1)[:, None]
        jj = np.arange(N)[None, :]
        phi_q = np.where(jj < kk, dt * dt * (kk - jj - 0.5), 0.0)  # [N, N]
        phi_v = np.where(jj < kk, dt, 0.0)
        diff = np.eye(N) - np.eye(N, k=-1)  # u_k - u_{k-1}; the first uses the previous a
        block = (cfg.mpc_position_weight * phi_q.T @ phi_q
                 + cfg.mpc_velocity_weight * phi_v.T @ phi_v
                 + cfg.mpc_acceleration_weight * np.eye(N)
                 + cfg.jerk_weight * diff.T @ diff)
        self._phi_q, self._phi_v, self._mpc_diff = phi_q, phi_v, diff
        blocks = [2.0 * self._weights[i] * block for i in range(n)]
        # first step of the unconstrained optimum (for the intervention flag)
        self._pinv_first = np.stack([np.linalg.inv(b)[0] for b in blocks])  # [n, N]
        # as in CBF mode, move half of u_0's own curvature onto s (s = |u_0| at the optimum)
        eps_s = np.array([0.5 * b[0, 0] for b in blocks])
        for i, b in enumerate(blocks):
            b[0, 0] -= eps_s[i]
        extra = np.concatenate([eps_s, np.full(n, 1e-8), [2.0]])
        P = sp.block_diag([*blocks, sp.diags(extra)], format="csc")
        rows: list[np.ndarray] = []
        cols: list[np.ndarray] = []
        vals: list[np.ndarray] = []
        r = 0

        def add(rr: object, cc: object, vv: object) -> None:
            rows.append(np.asarray(rr, dtype=np.int64).reshape(-1))
            cols.append(np.asarray(cc, dtype=np.int64).reshape(-1))
            vals.append(np.asarray(vv, dtype=np.float64).reshape(-1))

        # 1. u boxes: first step gets the merged joint box, later steps the acceleration limit
        add(np.arange(nu), np.arange(nu), np.ones(nu))
        r = nu
        # 2. split rows s - u_0 >= 0, s + u_0 >= 0
        sv = s0 + np.arange(n)
        add(r + np.arange(n), sv, np.ones(n))
        add(r + np.arange(n), u0, -np.ones(n))
        add(r + n + np.arange(n), sv, np.ones(n))
        add(r + n + np.arange(n), u0, np.ones(n))
        r += 2 * n
        # 3. first-step barrier slots over (u_0, s)
        self._slot_row0 = r
        slot_start = sum(len(v) for v in vals)
        add(r + np.repeat(np.arange(k), 2 * n), np.tile(np.concatenate([u0, sv]), k),
            np.zeros(k * 2 * n))
        r += k
        # 4. jerk rows u_k - u_{k-1} (k >= 1), 5. velocity rows v_k and 6. position rows q_k
        #    (k = 2..N), all per joint
        m1 = n * (N - 1)
        self._jerk_row0, self._vel_row0, self._pos_row0 = r, r + m1, r + 2 * m1
        for i in range(n):
            for step in range(1, N):
                row = i * (N - 1) + step - 1
                add([r + row] * 2, [i * N + step, i * N + step - 1], [1.0, -1.0])
                add([r + m1 + row] * (step + 1), i * N + np.arange(step + 1),
                    np.full(step + 1, dt))
                add([r + 2 * m1 + row] * (step + 1), i * N + np.arange(step + 1),
                    dt * dt * (step + 1 - np.arange(step + 1) - 0.5))
        r += 3 * m1
        # 7. Delta_i = q_N - q0 - N dt v0 as an equality, so terminal rows stay sparse
        self._delta_row0 = r
        for i in range(n):
            add([r + i] * (N + 1), np.concatenate([[d0 + i], i * N + np.arange(N)]),
                np.concatenate([[1.0], -dt * dt * (N - np.arange(N) - 0.5)]))
        r += n
        # 8. soft terminal barrier slots: G . Delta + sigma >= margin - h - G . N dt v0
        self._term_row0 = r
        term_start = sum(len(v) for v in vals)
        add(r + np.repeat(np.arange(k), n + 1),
            np.tile(np.concatenate([d0 + np.arange(n), [sig]]), k), np.zeros(k * (n + 1)))
        r += k
        # 9. sigma >= 0
        add([r], [sig], [1.0])
        r += 1
        self._m = r
        self._vals = np.concatenate(vals)
        self._slot_vals = self._vals[slot_start:slot_start + k * 2 * n].reshape(k, 2 * n)
        self._term_vals = self._vals[term_start:term_start + k * (n + 1)].reshape(k, n + 1)
        self._term_vals[:, n] = 1.0
        self._qp = FixedPatternQP(P, np.concatenate(rows), np.concatenate(cols), r,
                                  self._osqp_settings())
        self._lo = np.full(r, -np.inf)
        self._up = np.full(r, np.inf)
        self._lo[nu:nu + 2 * n] = 0.0
        self._lo[self._delta_row0:self._delta_row0 + n] = 0.0
        self._up[self._delta_row0:self._delta_row0 + n] = 0.0
        self._lo[r - 1] = 0.0
        self._qvec = np.zeros(nvar)
        self._qvec[sig] = 1e3  # linear price of violating the soft terminal rows
        self._u_index = u0

    # ------------------------------------------------------------------ the tick
    def step(
        self,
        q_ref: Sequence[float],
        v_ref: Sequence[float] | None = None,
        a_ref: Sequence[float] | None = None,
        future_ref: np.ndarray | None = None,
    ) -> FilterResult:
        """One tick: the commanded state after dt that follows the reference as closely as the
        constraints allow.

        The reference (q_ref, v_ref, a_ref) is for the time of the returned state; v_ref and
        a_ref default to 0. `future_ref` [N, J]: reference positions for the next N ticks
        (MPC mode; the first row is for the returned state); without it the MPC extrapolates
        q_ref with v_ref. Any malformed or non-finite input brakes, with the reason in the
        result; this method does not raise once reset() has been called.
        """
        with self._lock:
            if self._q is None:
                raise RuntimeError("SafetyFilter.step before reset(q)")
            t0 = time.perf_counter()
            n = self.n
            qr, why = _vec(q_ref, n, "q_ref")
            if qr is None:
                return self._brake(why)
            vr = np.zeros(n)
            if v_ref is not None:
                vr, why = _vec(v_ref, n, "v_ref")
                if vr is None:
                    return self._brake(why)
            ar = np.zeros(n)
            if a_ref is not None:
                ar, why = _vec(a_ref, n, "a_ref")
                if ar is None:
                    return self._brake(why)
            fut = None
            if future_ref is not None and self.config.mode == "mpc":
                try:
                    fut = np.asarray(future_ref, dtype=np.float64)
                except (TypeError, ValueError):
                    return self._brake("future_ref is not numeric")
                if fut.ndim != 2 or fut.shape[1] != n or fut.shape[0] < 1:
                    return self._brake(f"future_ref has shape {fut.shape}, expected [N, {n}]")
                if not np.all(np.isfinite(fut)):
                    return self._brake("future_ref is not finite")
            try:
                return self._tick(qr, vr, ar, fut, t0)
            except Exception as exc:  # never let the loop die here: braking is always safe
                return self._brake(f"internal error ({type(exc).__name__}: {exc})")

    def _tick(
        self, qr: np.ndarray, vr: np.ndarray, ar: np.ndarray, fut: np.ndarray | None, t0: float
    ) -> FilterResult:
        cfg, lim, dt = self.config, self._limits, self.dt
        q, v, a = self._q, self._v, self._a
        assert q is not None
        pos, jw, ee = self.robot.kinematics(q)
        if not math.isfinite(pos.sum() + jw.sum()):
            return self._brake("non-finite kinematics")
        w = manipulability_of(ee)
        amax = lim.acceleration
        # desired velocity towards the reference, limited so that a stop at half the
        # acceleration limit fits in the remaining error (no overshoot when saturated)
        err = qr - (q + v * dt + 0.5 * ar * dt * dt)
        k_pos = cfg.tracking_kp / cfg.tracking_kd
        abs_err = np.abs(err)
        fb = np.sign(err) * np.minimum(k_pos * abs_err, np.sqrt(amax * abs_err))
        v_goal = vr + fb
        scale = self._speed_scale(q, w, v_goal)
        self._last_scale = scale
        vmax = lim.velocity * scale
        v_goal = np.clip(v_goal * scale, -vmax, vmax)
        u_des = ar * scale + cfg.tracking_kd * (v_goal - v - ar * dt)
        phys_lo, phys_hi, lo, hi, _ = self._joint_box(q, v, a, vmax)
        rows_u, rows_s, rhs, clear = self._barrier_rows(pos, jw, v)
        if not math.isfinite(rows_u.sum() + rhs.sum() + u_des.sum()):
            return self._brake("non-finite barrier or reference terms")
        if len(self._bval) and self._bval.min() < 0.0 and v.any():
            # the stop from here is not certified by this tick's (more pessimistic) estimate;
            # the previous tick certified exactly this stop, so braking is the safe answer
            return self._brake("infeasible" + self._lost_certificate())
        if cfg.mode == "cbf":
            u_free = self._objective_cbf(u_des, a)
        else:
            u_free = self._objective_mpc(q, v, a, qr, vr, ar, fut, scale)
        # the rows keep in reserve what the next tick's estimate may add (so the next tick is
        # certified too); that reserve, jerk and the MPC planning rows yield before braking does
        strict = rhs + self._growth
        res = None
        if _rows_reachable(rows_u, rows_s, strict, lo, hi):
            res = self._solve(q, v, lo, hi, u_free, rows_u, rows_s, strict, pos, jw,
                              relax=False)
        if res is None or res.status_val not in (SOLVED, SOLVED_INACCURATE):
            res = self._solve(q, v, phys_lo, phys_hi, u_free, rows_u, rows_s, rhs, pos, jw,
                              relax=True)
        if res.status_val in INFEASIBLE:
            return self._brake(f"infeasible: {res.status}{self._lost_certificate()}", res)
        if res.status_val not in (SOLVED, SOLVED_INACCURATE):
            return self._brake(f"solver failure: {res.status}", res)
        u = res.x[self._u_index]
        if not math.isfinite(u.sum()):
            return self._brake("solver returned non-finite values", res)
        # check every barrier row (slotted or not); repair a shortfall by blending towards the
        # braking acceleration, which satisfies every row (the rows are concave in u)
        u = np.clip(u, phys_lo, phys_hi)
        u, blend = _repair(u, v, amax, dt, rows_u, rows_s, rhs)
        if u is None:
            return self._brake("no admissible acceleration satisfies the barrier rows", res)
        notes = []
        if blend > 0:
            notes.append(f"blended {blend:.3f} towards braking")
        if res.status_val == SOLVED_INACCURATE:
            notes.append("solved inaccurate")
        if scale < 1.0:
            notes.append(f"singularity slow-down x{scale:.2f}")
        intervened = bool(np.max(np.abs(u - u_free)) > cfg.intervention_tolerance)
        if intervened:
            notes.append(self._binding_reason(res.y))
        details = {
            "manipulability": w,
            "speed_scale": scale,
            "min_clearance": float(np.min(clear)) if len(clear) else math.inf,
            "barrier_rows_in_qp": float(self._n_selected),
            "blend": blend,
        }
        active = int(np.count_nonzero(np.abs(res.y) > 1e-6))
        out = self._commit(u, "ok", "; ".join(notes), intervened, res.iterations, res.solve_ms,
                           active, details)
        out.details["tick_ms"] = (time.perf_counter() - t0) * 1e3
        return out

    def _joint_box(
        self, q: np.ndarray, v: np.ndarray, a: np.ndarray, vmax: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, bool]:
        """Per-joint bounds on this tick's acceleration: (physical box: acceleration, position
        viability, velocity) and that box with jerk. Where they conflict (only from a state the
        filter did not command itself), the earlier ones win: acceleration, then position, then
        velocity, and jerk yields to all of them."""
        lim, dt = self._limits, self.dt
        amax = lim.acceleration
        n = self.n
        both = upper_bounds(np.concatenate((q, -q)), np.concatenate((v, -v)), self._top2,
                            self._b2, dt)
        p_lo, p_hi = -both[n:], both[:n]
        vel_lo, vel_hi = (-vmax - v) / dt, (vmax - v) / dt
        phys_lo = np.maximum(np.maximum(-amax, p_lo), vel_lo)
        phys_hi = np.minimum(np.minimum(amax, p_hi), vel_hi)
        if not (phys_lo <= phys_hi).all():
            phys_lo, phys_hi, _ = _intersect(-amax, amax, p_lo, p_hi)
            phys_lo, phys_hi, _ = _intersect(phys_lo, phys_hi, vel_lo, vel_hi)
        jd = self._jerk_dt
        lo = np.maximum(phys_lo, a - jd)
        hi = np.minimum(phys_hi, a + jd)
        ok = lo <= hi
        if ok.all():
            return phys_lo, phys_hi, lo, hi, True
        return phys_lo, phys_hi, np.where(ok, lo, phys_lo), np.where(ok, hi, phys_hi), False

    def _speed_scale(self, q: np.ndarray, w: float, v_goal: np.ndarray) -> float:
        """Velocity scale in [0, 1] near a singularity, applied only when the intended motion
        lowers manipulability (a look-ahead, as MoveIt Servo does): linear from 1 at the
        slow-down threshold to 0 at the stop threshold."""
        slow, stop = self.config.singularity
        if w >= slow:
            return 1.0
        look = q + 0.05 * v_goal
        if not np.all(np.isfinite(look)):
            return 0.0
        w_ahead = manipulability_of(self.robot.kinematics(look)[2])
        if w_ahead >= w:
            return 1.0
        return float(np.clip((w - stop) / (slow - stop), 0.0, 1.0))

    def _barrier_rows(
        self, pos: np.ndarray, jw: np.ndarray, v: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """All barrier rows  coef_u . u + coef_s . s >= rhs  (scaled by 2/dt^2: accelerations),
        and the current clearances h - sphere_margin.

        B(x) = h - margin - sum_i w_i v_i^2/(2b_i) - sum_i |G_i| b_i dt^2/8 - E is the clearance
        left after braking from x; w_i = |G_i| counts joints that may move towards the barrier
        (all joints whose velocity can change sign within the tick, else those whose velocity
        points towards it). Requiring B_lin(x+) >= (1 - gamma) B(x), with v+^2 bounded by the
        linear v^2 + 2 v u dt + b s dt^2 (s >= |u|), gives the row.
        """
        cfg, lim, dt = self.config, self._limits, self.dt
        bars = self._barriers
        b = lim.acceleration
        av = np.abs(v)
        gamma = cfg.barrier_gamma
        margin = cfg.sphere_margin + _SOLVER_SLACK_M
        # joint excursion bound over this tick and the stop after it (see braking.py), and the
        # same after a tick of full acceleration: how much the next tick's estimate can grow,
        # which the rows keep in reserve so that the next tick is certified too
        dd = np.empty((2, self.n))
        dd[0] = av
        dd[1] = av + b * dt
        dd = dd * dt + 0.625 * b * dt * dt + (dd + b * dt) ** 2 / (2.0 * b)
        err_s = self._curv_flat @ (dd[:, :, None] * dd[:, None, :]).reshape(2, -1).T  # [S, 2]
        sign_fixed = av > b * dt
        # reach of the stop per unit gradient: v^2/(2b), or for a joint that stops within the
        # tick |v| dt - v^2/(2b) (>= v^2/(2b)), the value the row's bound gives braking; with it
        # braking always satisfies the row whenever B(x) >= 0
        reach = np.where(sign_fixed, v * v / (2.0 * b), av * dt - v * v / (2.0 * b))
        h_all = bars.distances(pos)
        self._h_all = h_all
        # Rows no admissible u can bring near their bound are left out (exactly: with |G_i|
        # bounded by the lever arms, the row holds over the whole acceleration box).
        per_joint = reach + b * dt * dt / 8.0 + (2.0 / gamma) * (av * dt + 0.5 * b * dt * dt)
        t_s = self.robot.lever @ per_joint + err_s[:, 0] + (err_s[:, 1] - err_s[:, 0]) / gamma
        t_ext = np.append(t_s, 0.0)
        cand = np.flatnonzero(h_all < margin + t_ext[bars._row_sphere] + t_ext[bars._row_other])
        self._cand = cand
        h = h_all[cand]
        g = bars.gradients(cand, pos, jw)
        e2 = bars.row_errors(err_s, cand)
        e = e2[:, 0]
        ag = np.abs(g)
        wgt = np.where(sign_fixed, np.maximum(0.0, -g * np.sign(v)), ag)
        bval = h - margin - wgt @ reach - ag @ (b * dt * dt / 8.0) - e
        self._bval = bval
        coef_u = g - wgt * (2.0 * v / (b * dt))
        rhs = (-gamma * bval - (g @ v) * dt) * (2.0 / (dt * dt))
        self._growth = (e2[:, 1] - e) * (2.0 / (dt * dt))
        return coef_u, -wgt, rhs, h_all - cfg.sphere_margin

    def _lost_certificate(self) -> str:
        """Why a tick can be infeasible: the stop from here is no longer certified clear of a
        barrier (an obstacle moved in, or the estimate grew at speed). Braking is still safe: the
        previous tick certified the stop from this very state."""
        bval = getattr(self, "_bval", None)
        if bval is None or not len(bval) or float(np.min(bval)) >= 0.0:
            return ""

        r = int(np.argmin(bval))
        label = self._barriers.row_label(int(self._cand[r]))
        return f": stop not certified clear of {label} (B={bval[r]:.4f} m)"

    def _objective_cbf(self, u_des: np.ndarray, a: np.ndarray) -> np.ndarray:
        n, rho = self.n, self.config.jerk_weight
        self._qvec[:n] = -2.0 * (self._weights * u_des + rho * a)
        return (self._weights * u_des + rho * a) / (self._weights + rho)

    def _objective_mpc(self, q, v, a, qr, vr, ar, fut, scale) -> np.ndarray:
        cfg, dt, n, N = self.config, self.dt, self.n, self._N
        if fut is not None:
            refs = np.empty((N, n))
            m = min(N, fut.shape[0])
            refs[:m] = fut[:m]
            refs[m:] = fut[m - 1]
            refs[0] = qr
            vrefs = np.empty((N, n))
            vrefs[1:] = (refs[1:] - refs[:-1]) / dt
        else:
            refs = qr[None, :] + (np.arange(N)[:, None] * dt) * (vr * scale)[None, :]
            vrefs = np.repeat((vr * scale)[None, :], N, axis=0)
        vrefs[0] = vr * scale
        arefs = np.zeros((N, n))
        arefs[0] = ar * scale
        cq = q[None, :] + (np.arange(1, N + 1)[:, None] * dt) * v[None, :]
        d0 = np.zeros((N, n))
        d0[0] = a
        lin = (cfg.mpc_position_weight * self._phi_q.T @ (cq - refs)
               + cfg.mpc_velocity_weight * self._phi_v.T @ (v[None, :] - vrefs)
               - cfg.mpc_acceleration_weight * arefs - cfg.jerk_weight * self._mpc_diff.T @ d0)
        lin = (2.0 * lin * self._weights[None, :]).T  # [n, N]
        self._qvec[:n * N] = lin.reshape(-1)
        return -np.einsum("in,in->i", self._pinv_first, lin)

    def _select(
        self, rows_u: np.ndarray, rows_s: np.ndarray, rhs: np.ndarray, lo: np.ndarray,
        hi: np.ndarray, u_guess: np.ndarray,
    ) -> np.ndarray:
        """Indices of the barrier rows that get a QP slot: rows that some u in the box could
        violate (a row is concave in each u_i, so its minimum over the box is at a corner),
        those closest to violation at u_guess first."""
        # cheap screen over the whole acceleration box first, then the exact test
        cand = np.flatnonzero(rhs > (rows_s - np.abs(rows_u)) @ self._limits.acceleration)
        if len(cand):
            cu, cs = rows_u[cand], rows_s[cand]
            worst = np.minimum(cu * lo + cs * np.abs(lo), cu * hi + cs * np.abs(hi))
            cand = cand[worst.sum(axis=1) < rhs[cand]]
        if len(cand) > self._slots:
            at_guess = rows_u[cand] @ u_guess + rows_s[cand] @ np.abs(u_guess) - rhs[cand]
            cand = cand[np.argpartition(at_guess, self._slots)[:self._slots]]
        return cand

    def _solve(self, q, v, lo, hi, u_free, rows_u, rows_s, rhs, pos, jw, relax: bool):
        n, k = self.n, self._slots
        sel = self._select(rows_u, rows_s, rhs, lo, hi, np.clip(u_free, lo, hi))
        self._sel = sel
        self._n_selected = len(sel)
        ru = rows_u[sel]
        norm = np.maximum(np.abs(ru).max(axis=1), 1e-9)[:, None]
        slot = self._slot_vals
        slot[:len(sel), :n] = ru / norm
        slot[:len(sel), n:] = rows_s[sel] / norm
        slot[len(sel):] = 0.0
        r0 = self._slot_row0
        self._lo[r0:r0 + len(sel)] = rhs[sel] / norm[:, 0]
        self._lo[r0 + len(sel):r0 + k] = -np.inf
        if self.config.mode == "cbf":
            self._lo[:n] = lo
            self._up[:n] = hi
            # A only changes through the slots: nothing in them now or last tick, no change
            changed = bool(len(sel) or self._slots_used)
        else:
            self._bounds_mpc(q, v, lo, hi, pos, jw, relax)
            changed = True
        self._slots_used = len(sel)
        return self._qp.solve(self._qvec, self._vals, self._lo, self._up, a_changed=changed)

    def _bounds_mpc(self, q, v, lo, hi, pos, jw, relax: bool) -> None:
        cfg, lim, dt, n, N, k = self.config, self._limits, self.dt, self.n, self._N, self._slots
        amax = lim.acceleration
        lo_all, up_all = self._lo, self._up
        lo_all[:n * N] = np.repeat(-amax, N)
        up_all[:n * N] = np.repeat(amax, N)
        lo_all[self._u_index] = lo
        up_all[self._u_index] = hi
        m1 = n * (N - 1)
        j0, v0, p0 = self._jerk_row0, self._vel_row0, self._pos_row0
        jd = np.repeat(lim.jerk * dt, N - 1)
        lo_all[j0:j0 + m1] = -np.inf if relax else -jd
        up_all[j0:j0 + m1] = np.inf if relax else jd
        steps = np.arange(2, N + 1)[None, :]
        vmax = lim.velocity[:, None] * self._last_scale
        # later velocity bounds never ask for more than braking can do from the first step
        vb = np.maximum(vmax, np.abs(v)[:, None] - (steps - 1) * amax[:, None] * dt)
        lo_all[v0:v0 + m1] = (-vb - v[:, None]).reshape(-1)
        up_all[v0:v0 + m1] = (vb - v[:, None]).reshape(-1)
        base = q[:, None] + steps * dt * v[:, None]
        lo_all[p0:p0 + m1] = (lim.lower[:, None] - base).reshape(-1)
        up_all[p0:p0 + m1] = (lim.upper[:, None] - base).reshape(-1)
        # soft terminal rows on the most critical barriers (first-order, planning aid only)
        t0 = self._term_row0
        if relax:
            lo_all[t0:t0 + k] = -np.inf
            return
        h_all = self._h_all
        sel = np.argpartition(h_all, k)[:k] if len(h_all) > k else np.arange(len(h_all))
        sel = sel[h_all[sel] < INACTIVE / 2]
        h = h_all
        gs = self._barriers.gradients(sel, pos, jw)
        norm = np.maximum(np.abs(gs).max(axis=1), 1e-9) if len(sel) else np.ones(0)
        self._term_vals[:len(sel), :n] = gs / norm[:, None]
        self._term_vals[len(sel):, :n] = 0.0
        lo_all[t0:t0 + len(sel)] = (cfg.sphere_margin - h[sel] - (gs @ v) * (N * dt)) / norm
        lo_all[t0 + len(sel):t0 + k] = -np.inf

    def _binding_reason(self, y: np.ndarray) -> str:
        """Name what bound the solution, from the QP's multipliers."""
        parts = []
        k = self._n_selected
        if k:
            duals = np.abs(y[self._slot_row0:self._slot_row0 + k])
            j = int(np.argmax(duals))
            if duals[j] > 1e-6:
                row = int(self._cand[self._sel[j]])
                parts.append(f"barrier {self._barriers.row_label(row)}")
        at_box = np.flatnonzero(np.abs(y[self._u_index]) > 1e-6)
        if len(at_box):
            parts.append("joint limits on " + ", ".join(self.robot.joint_names[i] for i in at_box))
        return "; ".join(parts) if parts else "cost trade-off"

    # ------------------------------------------------------------------ braking and commit
    def brake(self, reason: str = "brake requested") -> FilterResult:
        """The safest provable command: every joint decelerates at its limit towards zero
        velocity, which stays within the position, velocity and acceleration limits by
        construction (and within jerk whenever jerk * dt covers the change, as it does for the
        Panda at 100 Hz). `status` is "holding" once stopped."""
        with self._lock:
            if self._q is None:
                raise RuntimeError("SafetyFilter.brake before reset(q)")
            return self._brake(reason)

    def _brake(self, reason: str, res=None) -> FilterResult:
        lim = self._limits
        u = brake_acceleration(self._v, lim.acceleration, self.dt)
        stopped = bool(np.all(self._v == 0.0))
        status = "holding" if stopped else "braking"
        return self._commit(
            u, status, reason, True,
            res.iterations if res is not None else 0,
            res.solve_ms if res is not None else 0.0,
            0, {},
        )

    def _commit(
        self,
        u: np.ndarray,
        status: str,
        reason: str,
        intervened: bool,
        iterations: int,
        solve_ms: float,
        active: int,
        details: dict[str, float],
    ) -> FilterResult:
        """Last line of defence: clamp u to the acceleration limit and to what keeps velocity and
        position inside the limits, integrate, and store the new commanded state."""
        lim, dt = self._limits, self.dt
        q, v = self._q, self._v
        assert q is not None
        amax = lim.acceleration
        if not math.isfinite(u.sum()):
            u = brake_acceleration(v, amax, dt)
        vel_lo = np.minimum((-lim.velocity - v) / dt, 0.0)
        vel_hi = np.maximum((lim.velocity - v) / dt, 0.0)
        u = np.clip(u, np.maximum(vel_lo, -amax), np.minimum(vel_hi, amax))
        q_new = q + v * dt + 0.5 * u * dt * dt
        over = (q_new > lim.upper) | (q_new < lim.lower)
        if np.any(over):  # only reachable through rounding: land exactly on the limit
            target = np.clip(q_new, lim.lower, lim.upper)
            u_fix = 2.0 * (target - q - v * dt) / (dt * dt)
            u = np.where(over, np.clip(u_fix, -amax, amax), u)
            q_new = np.where(over, target, q + v * dt + 0.5 * u * dt * dt)
        v_new = v + u * dt
        self._q, self._v, self._a = q_new, v_new, u.copy()
        return FilterResult(
            positions=q_new.copy(),
            velocities=v_new.copy(),
            accelerations=u.copy(),
            status=status,
            intervened=intervened,
            reason=reason,
            iterations=iterations,
            solve_ms=solve_ms,
            active_constraints=active,
            details=details,
        )


def _intersect(
    lo: np.ndarray, hi: np.ndarray, lo2: np.ndarray, hi2: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Intersect per-joint intervals where that leaves something; elsewhere keep the end of
    [lo, hi] nearest to [lo2, hi2] (the earlier constraint has priority)."""
    nlo = np.maximum(lo, lo2)
    nhi = np.minimum(hi, hi2)
    ok = nlo <= nhi
    near = np.where(hi2 < lo, lo, hi)  # [lo2, hi2] entirely below: stick to lo, else to hi
    out_lo = np.where(ok, nlo, near)
    out_hi = np.where(ok, nhi, near)
    return out_lo, out_hi, ok


def _repair(
    u: np.ndarray,
    v: np.ndarray,
    amax: np.ndarray,
    dt: float,
    rows_u: np.ndarray,
    rows_s: np.ndarray,
    rhs: np.ndarray,
) -> tuple[np.ndarray | None, float]:
    """Smallest blend (1 - lam) u + lam brake_u that satisfies every barrier row, or None when
    even braking does not (rows are concave in u, so the blend's value is at least the blend of
    the values)."""
    if len(rhs) == 0:
        return u, 0.0
    f_u = rows_u @ u + rows_s @ np.abs(u)
    short = rhs - f_u
    if np.max(short) <= 0.0:
        return u, 0.0
    brake_u = brake_acceleration(v, amax, dt)
    f_b = rows_u @ brake_u + rows_s @ np.abs(brake_u)
    bad = short > 0.0
    gain = f_b[bad] - f_u[bad]
    if np.any(f_b[bad] < rhs[bad]) or np.any(gain <= 0.0):
        return None, 1.0
    lam = min(1.0, float(np.max(short[bad] / gain)) * (1.0 + 1e-9) + 1e-12)
    return (1.0 - lam) * u + lam * brake_u, lam


def _rows_reachable(
    rows_u: np.ndarray, rows_s: np.ndarray, rhs: np.ndarray, lo: np.ndarray, hi: np.ndarray
) -> bool:
    """False when some row cannot be met anywhere in the box (its exact maximum there, a sum of
    per-joint maxima of concave pieces at lo, hi or 0, is below its bound): the QP is then
    infeasible, and OSQP would spend its whole iteration budget finding that out."""
    need = np.flatnonzero(rhs > 0.0)
    if not len(need):
        return True
    cu, cs = rows_u[need], rows_s[need]
    best = np.maximum(cu * lo + cs * np.abs(lo), cu * hi + cs * np.abs(hi))
    best = np.where((lo <= 0.0) & (hi >= 0.0), np.maximum(best, 0.0), best)
    return bool(np.all(best.sum(axis=1) >= rhs[need]))
