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

from diffusion_controller.control.barriers import CartesianBarriers
from diffusion_controller.control.braking import (
    UpperBounds,
    brake_acceleration,
    viability_bounds,
)
from diffusion_controller.control.limits import tighten
from diffusion_controller.control.qp import INFEASIBLE, SOLVED, SOLVED_INACCURATE, FixedPatternQP
from diffusion_controller.control.robot_model import RobotModel
from diffusion_controller.control.types import FilterResult, JointLimits, Sphere

_SOLVER_SLACK_M = 1e-5  # metres the barrier rows are tightened by, to absorb OSQP's tolerance
_sum = np.add.reduce  # the ufunc itself: ndarray.sum() adds a Python-level wrapper per call


@dataclass
class SafetyConfig:
    """Safety filter settings. Units: metres, radians, seconds."""

    rate_hz: float = 100.0
    """Tick rate of the commanded double integrator (dt = 1 / rate_hz)."""
    mode: str = "cbf"
    """"cbf": one-step QP over the next acceleration; "mpc": QP over `horizon` accelerations."""
    horizon: int = 10
    """MPC horizon in ticks (ignored in CBF mode)."""
    mpc_inputs: int = 5
    """MPC: distinct accelerations per joint over the horizon (move blocking): the first tick's
    own, then blocks that share one; `horizon` gives one per tick. Fewer make a smaller QP."""
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
        if not isinstance(self.mpc_inputs, int) or not 2 <= self.mpc_inputs <= self.horizon:
            raise ValueError(f"SafetyConfig.mpc_inputs must be an int in [2, horizon], "
                             f"got {self.mpc_inputs}")
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


def mpc_blocks(horizon: int, inputs: int) -> np.ndarray:
    """Ticks per MPC acceleration block: the first tick alone (it is the command), the other
    horizon - 1 ticks split as evenly as they go, the longer blocks last (the far future needs
    the least resolution)."""
    rest = inputs - 1
    base, extra = divmod(horizon - 1, rest)
    return np.array([1] + [base + (i >= rest - extra) for i in range(rest)], dtype=np.int64)


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
        self._kin = robot.tick_kinematics()
        self._prepare_tick()
        self._sel = np.zeros(0, dtype=np.int64)
        self._cand = np.zeros(0, dtype=np.int64)
        self._bval = np.zeros(0)
        self._screen = True
        self._slots_used = 0
        self._n_selected = 0
        self._build()

    def _prepare_tick(self) -> None:
        """Constants and buffers of the tick. Limits and dt are fixed for the filter's life;
        everything a tick computes lands in these buffers, so a tick is a fixed sequence of
        numpy calls on preallocated arrays (their count, not their size, is what costs)."""
        lim, dt, n = self._limits, self.dt, self.n
        b = lim.acceleration
        s = len(self.robot.sphere_radii)
        self._amax = b
        self._vel = lim.velocity
        self._neg_vel = -lim.velocity
        self._b2 = np.concatenate((b, b))
        self._vel2 = np.concatenate((lim.velocity, lim.velocity))
        self._viable = UpperBounds(np.concatenate((lim.upper, -lim.lower)), self._b2, dt)
        # jerk can only bind if it is tighter than a full swing of the acceleration box
        jerk_dt = lim.jerk * dt
        self._jerk_dt2 = np.concatenate((jerk_dt, jerk_dt))
        self._jerk_free = bool(np.all(jerk_dt >= 2.0 * b))
        self._q2 = np.empty(2 * n)
        self._v2 = np.empty(2 * n)
        self._box2 = np.empty(2 * n)
        # _commit checks [|v+|, |u|, q+, -q+] against [velocity, acceleration, upper, -lower]
        self._lim4 = np.concatenate((lim.velocity, b, lim.upper, -lim.lower))
        self._chk4 = np.empty(4 * n)
        # a joint this far inside its limits can take a full tick of acceleration and still
        # stop in time (|v| <= the velocity limit, the state the filter commands): then the
        # viability bound is above the acceleration limit and need not be computed. With
        # X = v_max + b dt (the fastest v+), the stop after such a tick needs at most
        # v_max dt/2 + X^2/(2b) + X dt + b dt^2/8 (both forms in braking.UpperBounds).
        fastest = lim.velocity + b * dt
        reach = (0.5 * lim.velocity * dt + fastest * fastest / (2.0 * b) + fastest * dt
                 + b * dt * dt / 8.0)
        self._far2 = np.concatenate((lim.upper - reach, -lim.lower - reach))
        self._ones_n = np.ones(n)
        # barrier-row constants (see _barrier_rows)
        self._bdt = b * dt
        self._inv2b = 0.5 / b
        self._k8 = b * dt * dt / 8.0
        self._c_u = 2.0 / (b * dt)
        self._dd_shift = np.stack([b * dt, 2.0 * b * dt])
        self._dd_const = -0.375 * b * dt * dt
        self._dd = np.empty((2, n))
        # per sphere (and a zero dummy sphere last): [|point Jacobian columns| | curvature / 2],
        # the first block refreshed every tick. One product with
        # [[per-joint reach, 0], [0, outer(dd0)], [0, outer(dd1)]] gives each sphere's screening
        # reach and its linearisation error bounds for this tick and the next.
        k = np.zeros((s + 1, n + n * n))
        k[:s, n:] = 0.5 * self.robot.curvature.reshape(s, -1)
        self._sph_k = k
        self._jp_norm = k[:, :n]
        self._sph_x = np.zeros((3, n + n * n))
        self._pj = self._sph_x[0, :n]
        self._sph_outer = self._sph_x[1:, n:].reshape(2, n, n)
        if not np.shares_memory(self._sph_outer, self._sph_x):
            raise RuntimeError("internal: outer-product buffer is not a view")
        self._sph_y = np.empty((3, s + 1))
        self._jp_sq = np.empty((s + 1, 3, n))
        self._ones3 = np.ones(3)
        self._m2 = np.zeros((2, 3 * n))  # m2 @ [g; |g|; w] -> (braking reach, rhs part)
        self._gamma_seen = math.nan
        self._recovering = False  # inside a barrier margin, moving out
        self._lh = np.empty((2, 2 * n, 1))
        self._uu = np.empty(2 * n)

    def _set_gamma(self, gamma: float) -> None:
        """Refresh the constants that depend on barrier_gamma (a live setting)."""
        n, dt = self.n, self.dt
        self._gamma_seen = gamma
        self._t_comb = np.array([1.0, 1.0 - 1.0 / gamma, 1.0 / gamma])
        self._c_gamma = 2.0 * gamma / (dt * dt)
        self._pj_const = self._k8 + self._amax * dt * dt / gamma
        self._m2[0, n:2 * n] = self._k8
        self._m2[1, n:2 * n] = self._c_gamma * self._k8

    def _alloc_rows(self, count: int) -> None:
        """Per-row buffers for `count` barrier rows (again whenever obstacle slots grow)."""
        self._rb_ta = np.empty(count)
        self._rb_tb = np.empty(count)
        self._rb_mask = np.empty(count, dtype=bool)
        self._rs_empty = self._rs = np.zeros((2 * self.n, 0))

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

    def continuation(self, steps: int) -> np.ndarray:
        """The certified continuation of the committed state: [steps, 3, J] (q, v, a) at the next
        `steps` ticks of braking at the acceleration limit, the stop every barrier row and the
        position viability bound of this tick were certified for. What a trajectory controller
        may be sent beyond this tick: if no newer message replaces it, the arm comes to rest
        along a stop the filter vouched for. Does not change the filter's state."""
        q, v, _ = self.state
        b, dt = self._limits.acceleration, self.dt
        out = np.empty((steps, 3, self.n))
        for k in range(steps):
            u = brake_acceleration(v, b, dt)
            q = q + v * dt + 0.5 * u * dt * dt
            v = v + u * dt
            v[np.abs(v) < 1e-12] = 0.0
            out[k, 0], out[k, 1], out[k, 2] = q, v, u
        return out

    @property
    def barrier_row_counts(self) -> dict[str, int]:
        """Cartesian barrier rows by kind: workspace_rows, obstacle_rows, self_collision_rows."""
        return self._barriers.row_counts()

    def reset(self, q: Sequence[float], v: Sequence[float] | None = None) -> None:
        """Start from a measured state (v defaults to 0); clears the acceleration.

        Raises ValueError if q or v is malformed or non-finite, outside the effective limits, or
        not able to stop inside the position limits: the filter cannot vouch for such a state.
        """
        self._start(q, v, None, over_speed=False)

    def take_over(self, q: Sequence[float], v: Sequence[float], a: Sequence[float]) -> None:
        """Continue from another filter's commanded (q, v, a) (a live change of limits).

        Unlike reset, a velocity above this filter's (lowered) limit is accepted: the joint box
        puts acceleration before velocity, so the first ticks decelerate at the acceleration
        limit down to the new velocity limit. The acceleration is kept (clipped to this filter's
        limit), so the hand-over adds no step to it. Still raises ValueError for a state outside
        the position limits or too fast to stop inside them.
        """
        self._start(q, v, a, over_speed=True)

    def _start(self, q: Sequence[float], v: Sequence[float] | None,
               a: Sequence[float] | None, over_speed: bool) -> None:
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
        if fast and not over_speed:
            raise ValueError("reset: velocities above the safety limit: " + "; ".join(fast))
        lo, hi = viability_bounds(qa, va, lim.lower, lim.upper, lim.acceleration, self.dt)
        if np.any(lo > lim.acceleration + 1e-9) or np.any(hi < -lim.acceleration - 1e-9):
            raise ValueError("reset: a joint is too fast to stop inside its position limits")
        aa = np.zeros(self.n)
        if a is not None:
            a_in, why = _vec(a, self.n, "a")
            if a_in is None:
                raise ValueError(f"take over: {why}")
            aa = np.clip(a_in, -lim.acceleration, lim.acceleration)
        with self._lock:
            self._q, self._v, self._a = qa.copy(), va.copy(), aa
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
            # convergence checked every 3 iterations: warm-started solves mostly need 6-9, so
            # checking every 5 ran 10 (solve p50 0.074 vs 0.083 ms in MPC, 0.048 vs 0.052 CBF)
            "check_termination": 3,
            "adaptive_rho": True,
            # OSQP redoes its Ruiz equilibration at every matrix update (every tick with a
            # barrier row); 3 passes cost half of what 10 do and converge as fast (MPC: mean
            # iterations 15.7 vs 19.3, p50 solve 0.12 vs 0.18 ms)
            "scaling": 3,
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
        self._alloc_rows(self._barriers.count)
        self._slots_used = 0
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
        # move blocking: M accelerations per joint over the N ticks, the first tick's (the
        # command) alone, the rest held over blocks (see mpc_blocks)
        blocks = mpc_blocks(N, cfg.mpc_inputs)
        M = len(blocks)
        self._M = M
        expand = np.zeros((N, M))  # tick k's acceleration from the block variables
        expand[np.arange(N), np.repeat(np.arange(M), blocks)] = 1.0
        checks = np.cumsum(blocks)[1:]  # ticks where the horizon rows check v and q: block ends
        R = len(checks)
        nu = n * M  # u, joint-major: index i * M + block
        s0, d0, sig = nu, nu + n, nu + 2 * n
        nvar = nu + 2 * n + 1
        u0 = np.arange(n) * M
        # condensed dynamics per joint: q_k - q0 - k dt v0 = dt^2 sum_{j<k} (k-j-1/2) u_j
        kk = np.arange(1, N + 1)[:, None]
        jj = np.arange(N)[None, :]
        phi_q = np.where(jj < kk, dt * dt * (kk - jj - 0.5), 0.0) @ expand  # [N, M]
        phi_v = np.where(jj < kk, dt, 0.0) @ expand
        diff = (np.eye(N) - np.eye(N, k=-1)) @ expand  # u_k - u_{k-1}; the first uses a_prev
        block = (cfg.mpc_position_weight * phi_q.T @ phi_q
                 + cfg.mpc_velocity_weight * phi_v.T @ phi_v
                 + cfg.mpc_acceleration_weight * expand.T @ expand
                 + cfg.jerk_weight * diff.T @ diff)
        self._phi_q, self._phi_v, self._mpc_diff = phi_q, phi_v, diff
        self._mpc_expand = expand
        self._mpc_block = block
        self._mpc_rho = math.nan  # the linear-cost matrices follow the live jerk_weight
        self._mpc_z = np.empty((5 + N, n))
        blocks_p = [2.0 * self._weights[i] * block for i in range(n)]
        # as in CBF mode, move half of u_0's own curvature onto s (s = |u_0| at the optimum)
        eps_s = np.array([0.5 * b[0, 0] for b in blocks_p])
        for i, b in enumerate(blocks_p):
            b[0, 0] -= eps_s[i]
        extra = np.concatenate([eps_s, np.full(n, 1e-8), [2.0]])
        P = sp.block_diag([*blocks_p, sp.diags(extra)], format="csc")
        rows: list[np.ndarray] = []
        cols: list[np.ndarray] = []
        vals: list[np.ndarray] = []
        r = 0

        def add(rr: object, cc: object, vv: object) -> None:
            rows.append(np.asarray(rr, dtype=np.int64).reshape(-1))
            cols.append(np.asarray(cc, dtype=np.int64).reshape(-1))
            vals.append(np.asarray(vv, dtype=np.float64).reshape(-1))

        def add_row(row: int, joint: int, coef: np.ndarray) -> None:
            nz = np.flatnonzero(coef)
            add(np.full(len(nz), row), joint * M + nz, coef[nz])

        # 1. u boxes: first step gets the merged joint box, later blocks the acceleration limit
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
        # 4. velocity rows and 5. position rows at the block ends after the first, per joint
        #    (velocity is linear within a block, so its ends bound it); 6. jerk rows between
        #    consecutive blocks only where they can bind: when jerk dt >= 2 amax for every joint
        #    (the Panda at 100 Hz), any two accelerations inside the u boxes satisfy them
        m1 = n * R
        self._jerk_rows = not self._jerk_free
        self._vel_row0, self._pos_row0, self._jerk_row0 = r, r + m1, r + 2 * m1
        jerk_m = n * (M - 1)
        for i in range(n):
            for c, step in enumerate(checks):
                add_row(r + i * R + c, i, phi_v[step - 1])
                add_row(r + m1 + i * R + c, i, phi_q[step - 1])
            if self._jerk_rows:
                for b in range(1, M):
                    row = r + 2 * m1 + i * (M - 1) + b - 1
                    add([row] * 2, [i * M + b, i * M + b - 1], [1.0, -1.0])
        r += 2 * m1 + (jerk_m if self._jerk_rows else 0)
        # 7. Delta_i = q_N - q0 - N dt v0 as an equality, so terminal rows stay sparse
        self._delta_row0 = r
        for i in range(n):
            nz = np.flatnonzero(phi_q[N - 1])
            add([r + i] * (len(nz) + 1), np.concatenate([[d0 + i], i * M + nz]),
                np.concatenate([[1.0], -phi_q[N - 1, nz]]))
        r += n
        # 8. soft terminal barrier slots: G . Delta + sigma >= margin - h - G . N dt v0
        kt = self._term_slots = min(k, _TERMINAL_SLOTS)
        self._term_row0 = r
        term_start = sum(len(v) for v in vals)
        add(r + np.repeat(np.arange(kt), n + 1),
            np.tile(np.concatenate([d0 + np.arange(n), [sig]]), kt), np.zeros(kt * (n + 1)))
        r += kt
        # 9. sigma >= 0
        add([r], [sig], [1.0])
        r += 1
        self._m = r
        self._vals = np.concatenate(vals)
        self._slot_vals = self._vals[slot_start:slot_start + k * 2 * n].reshape(k, 2 * n)
        self._term_vals = self._vals[term_start:term_start + kt * (n + 1)].reshape(kt, n + 1)
        self._term_vals[:, n] = 1.0
        self._term_used = 0
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
        # bounds that never change (the first step's box is written every tick)
        amax = self._limits.acceleration
        self._lo[:nu] = np.repeat(-amax, M)
        self._up[:nu] = np.repeat(amax, M)
        self._mpc_relaxed = None  # jerk rows: set by the first tick
        self._mpc_vel_drop = (checks - 1)[None, :] * amax[:, None] * dt  # braking from step 1
        self._mpc_horizon_dt = N * dt
        self._mpc_dmax = amax * phi_q[N - 1].sum()  # the largest |Delta_i| the u boxes allow
        self._mpc_w2 = np.concatenate([np.zeros(n), -self._mpc_dmax])
        self._vel_col = self._limits.velocity[:, None]
        # [velocity; position] rows at the checked ticks: bound - x (see _bounds_mpc)
        self._mpc_lo_b = np.empty((2, n, R))
        self._mpc_up_b = np.empty((2, n, R))
        self._mpc_lo_b[1] = self._limits.lower[:, None]
        self._mpc_up_b[1] = self._limits.upper[:, None]
        self._mpc_x = np.empty((2, n, R))
        self._mpc_x_dt = np.stack([np.ones(R), checks * dt])[:, None, :]  # x = q_sel + v * this
        v0 = self._vel_row0
        if self._pos_row0 != v0 + m1:
            raise RuntimeError("internal: velocity and position rows are not adjacent")
        self._mpc_vplo = self._lo[v0:v0 + 2 * m1].reshape(2, n, R)
        self._mpc_vpup = self._up[v0:v0 + 2 * m1].reshape(2, n, R)
        self._mpc_qvec = self._qvec[:nu].reshape(n, M)
        self._w_all_one = bool(np.all(self._weights == 1.0))

    def _mpc_objective_matrices(self, rho: float) -> None:
        """The MPC's linear cost is linear in Z = [q; v; a; v_ref s; a_ref s; references]
        (rows of [5 + N, J], or [6, J] when only q_ref is known): lin = C @ Z, and the first
        step of the unconstrained optimum is -f @ Z. C and f are built once (again when the
        live jerk_weight changes), so a tick spends two products on the objective."""
        cfg, dt, N, M = self.config, self.dt, self._N, self._M
        wq, wv = cfg.mpc_position_weight, cfg.mpc_velocity_weight
        pq, pv = self._phi_q, self._phi_v  # [N, M]
        ones = np.ones(N)
        e0 = np.zeros(N)  # the first tick
        e0[0] = 1.0
        u0 = np.zeros(M)  # its acceleration, the first block
        u0[0] = 1.0
        kk = dt * np.arange(1, N + 1)  # the current motion's prediction q + k dt v
        kk0 = dt * np.arange(N)  # extrapolated references qr + k dt v_ref
        alpha = wq * pq.T @ ones
        beta = wq * pq.T @ kk + wv * pv.T @ ones
        delta = -rho * self._mpc_diff.T @ e0  # previous acceleration, through the jerk cost
        a_col = -cfg.mpc_acceleration_weight * u0
        diff = np.zeros((N, N))  # velocity references from consecutive future references
        idx = np.arange(1, N)
        diff[idx, idx] = 1.0 / dt
        diff[idx, idx - 1] = -1.0 / dt
        c_fut = np.column_stack([alpha, beta, delta, -wv * pv.T @ e0, a_col,
                                 -(wq * pq.T + wv * pv.T @ diff)])
        c_hold = np.column_stack([alpha, beta, delta, -(wq * pq.T @ kk0 + wv * pv.T @ ones),
                                  a_col, -wq * pq.T @ ones])
        first = np.linalg.inv(self._mpc_block)[0]  # row of the per-joint inverse (same block)
        self._mpc_c_fut, self._mpc_c_hold = 2.0 * c_fut.T, 2.0 * c_hold.T  # -> [.., M]
        self._mpc_f_fut, self._mpc_f_hold = c_fut.T @ first, c_hold.T @ first
        self._mpc_rho = rho

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
            refs = []
            for value, name in ((q_ref, "q_ref"), (v_ref, "v_ref"), (a_ref, "a_ref")):
                if value is None:
                    refs.append(None)
                elif (type(value) is np.ndarray and value.shape == (n,)
                      and value.dtype == np.float64):
                    refs.append(value)  # checked for finiteness below, all at once
                else:
                    arr, why = _vec(value, n, name)
                    if arr is None:
                        return self._brake(why)
                    refs.append(arr)
            qr, vr, ar = refs
            total = _sum(qr)
            if vr is not None:
                total += _sum(vr)
            if ar is not None:
                total += _sum(ar)
            if not math.isfinite(total):  # name the culprit (or pass a huge but finite sum)
                for value, name in ((qr, "q_ref"), (vr, "v_ref"), (ar, "a_ref")):
                    if value is not None:
                        arr, why = _vec(value, n, name)
                        if arr is None:
                            return self._brake(why)
            fut = None
            if future_ref is not None and self.config.mode == "mpc":
                try:
                    fut = np.asarray(future_ref, dtype=np.float64)
                except (TypeError, ValueError):
                    return self._brake("future_ref is not numeric")
                if fut.ndim != 2 or fut.shape[1] != n or fut.shape[0] < 1:
                    return self._brake(f"future_ref has shape {fut.shape}, expected [N, {n}]")
                if not math.isfinite(_sum(fut, axis=None)) and not np.all(np.isfinite(fut)):
                    return self._brake("future_ref is not finite")
            try:
                return self._tick(qr, vr, ar, fut, t0)
            except Exception as exc:  # never let the loop die here: braking is always safe
                return self._brake(f"internal error ({type(exc).__name__}: {exc})")

    def _tick(
        self,
        qr: np.ndarray,
        vr: np.ndarray | None,
        ar: np.ndarray | None,
        fut: np.ndarray | None,
        t0: float,
    ) -> FilterResult:
        cfg, dt = self.config, self.dt
        q, v, a = self._q, self._v, self._a
        assert q is not None
        kin = self._kin
        kin.update(q)
        if not math.isfinite(_sum(kin.pos, axis=None) + _sum(kin.jw, axis=None)):
            return self._brake("non-finite kinematics")
        w = kin.manipulability()
        # desired velocity towards the reference, limited so that a stop at half the
        # acceleration limit fits in the remaining error (no overshoot when saturated)
        err = qr - q
        err -= v * dt
        if ar is not None:
            err -= ar * (0.5 * dt * dt)
        abs_err = np.abs(err)
        fb = abs_err * (cfg.tracking_kp / cfg.tracking_kd)
        np.minimum(fb, np.sqrt(np.multiply(abs_err, self._amax, out=abs_err), out=abs_err),
                   out=fb)
        v_goal = np.copysign(fb, err, out=fb)
        if vr is not None:
            v_goal += vr
        scale = 1.0 if w >= cfg.singularity[0] else self._speed_scale(q, w, v_goal)
        self._last_scale = scale
        if scale == 1.0:
            vmax = self._vel
            np.minimum(v_goal, vmax, out=v_goal)
            np.maximum(v_goal, self._neg_vel, out=v_goal)
        else:
            vmax = self._vel * scale
            v_goal *= scale
            np.minimum(v_goal, vmax, out=v_goal)
            np.maximum(v_goal, -vmax, out=v_goal)
        # u_des = a_ref scale + kd (v_goal - v - a_ref dt)
        u_des = np.subtract(v_goal, v, out=v_goal)
        if ar is not None:
            u_des -= ar * dt
        u_des *= cfg.tracking_kd
        if ar is not None:
            u_des += ar * scale if scale != 1.0 else ar
        phys_lo, phys_hi, lo, hi = self._joint_box(q, v, a, vmax)
        count = self._barrier_rows(v)
        strict, rhs = self._strict, self._rhs
        # rhs sums every row's h, error bounds and |G| (ag @ b dt^2/8 with b > 0), and G, w and
        # coef_u are finite together: one sum catches a non-finite value anywhere in the rows
        if not math.isfinite(_sum(strict) + _sum(u_des)):
            return self._brake("non-finite barrier or reference terms")
        recovery = ""
        if count and self._bval.min() < 0.0:
            if self._recovering or not v.any():
                # inside a barrier's margin (started there, or came to rest there after a hold):
                # those rows ask only that their barrier not decrease, so moving out is
                # admitted under the same limits, and moving further in is not
                recovery = self._recover_rows()
            else:
                # the stop from here is not certified by this tick's (more pessimistic)
                # estimate; the previous tick certified exactly this stop: brake
                return self._brake("infeasible" + self._lost_certificate())
        self._recovering = bool(recovery)
        if recovery:
            strict, rhs = self._strict, self._rhs
        if cfg.mode == "cbf":
            u_free = self._objective_cbf(u_des, a)
        else:
            u_free = self._objective_mpc(q, v, a, qr, vr, ar, fut, scale)
        # the rows keep in reserve what the next tick's estimate may add (so the next tick is
        # certified too); that reserve, jerk and the MPC planning rows yield before braking does
        res = None
        worst, best = self._corners(count, lo, hi)
        if not (np.maximum(best, 0.0) < strict).any():  # every row reachable in the box
            res = self._solve(q, v, lo, hi, u_free, strict, worst, relax=False)
        if res is None or res.status_val not in (SOLVED, SOLVED_INACCURATE):
            worst, _ = self._corners(count, phys_lo, phys_hi)
            res = self._solve(q, v, phys_lo, phys_hi, u_free, rhs, worst, relax=True)
        if res.status_val in INFEASIBLE:
            return self._brake(f"infeasible: {res.status}{self._lost_certificate()}", res)
        if res.status_val not in (SOLVED, SOLVED_INACCURATE):
            return self._brake(f"solver failure: {res.status}", res)
        u = res.x[self._u_index]
        if not math.isfinite(_sum(u)):
            return self._brake("solver returned non-finite values", res)
        # check every barrier row (slotted or not); repair a shortfall by blending towards the
        # braking acceleration, which satisfies every row (the rows are concave in u)
        np.maximum(u, phys_lo, out=u)
        np.minimum(u, phys_hi, out=u)
        u, blend = self._repair(u, v, count)
        if u is None:
            return self._brake("no admissible acceleration satisfies the barrier rows", res)
        notes = []
        if blend > 0:
            notes.append(f"blended {blend:.3f} towards braking")
        if res.status_val == SOLVED_INACCURATE:
            notes.append("solved inaccurate")
        if scale < 1.0:
            notes.append(f"singularity slow-down x{scale:.2f}")
        if recovery:
            notes.insert(0, recovery)
        gap = np.subtract(u, u_free, out=u_free)
        intervened = bool(np.abs(gap, out=gap).max() > cfg.intervention_tolerance)
        ay = np.abs(res.y)
        if intervened:
            notes.append(self._binding_reason(ay))
        h_all = self._h_all
        details = {
            "manipulability": w,
            "speed_scale": scale,
            "min_clearance": float(h_all.min()) - cfg.sphere_margin if len(h_all) else math.inf,
            "barrier_rows_in_qp": float(self._n_selected),
            "blend": blend,
        }
        active = int(np.count_nonzero(ay > 1e-6))
        out = self._commit(u, "ok", "; ".join(notes), intervened, res.iterations, res.solve_ms,
                           active, details)
        details["tick_ms"] = (time.perf_counter() - t0) * 1e3
        return out

    def _joint_box(
        self, q: np.ndarray, v: np.ndarray, a: np.ndarray, vmax: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Per-joint bounds on this tick's acceleration: (physical box: acceleration, position
        viability, velocity) and that box with jerk. Where they conflict (only from a state the
        filter did not command itself), the earlier ones win: acceleration, then position, then
        velocity, and jerk yields to all of them.

        Worked on the doubled vector [upper side of u; upper side of -u], so each limit is one
        call for both sides."""
        n, dt = self.n, self.dt
        q2, v2, box = self._q2, self._v2, self._box2
        q2[:n] = q
        np.negative(q, out=q2[n:])
        v2[:n] = v
        np.negative(v, out=v2[n:])
        # position viability (a stop inside the limits), unless every joint is far inside
        pos2 = self._b2 if (self._far2 - q2).min() >= 0.0 else self._viable(q2, v2)
        vmax2 = self._vel2 if vmax is self._vel else np.concatenate((vmax, vmax))
        np.subtract(vmax2, v2, out=box)
        np.multiply(box, 1.0 / dt, out=box)  # velocity
        np.minimum(box, pos2, out=box)
        np.minimum(box, self._b2, out=box)  # acceleration
        if not (box[:n] + box[n:]).min() >= 0.0:  # some joint's interval is empty
            amax = self._amax
            p_lo, p_hi = -pos2[n:], pos2[:n].copy()
            vel_lo, vel_hi = (-vmax - v) / dt, (vmax - v) / dt
            phys_lo, phys_hi, _ = _intersect(-amax, amax, p_lo, p_hi)
            phys_lo, phys_hi, _ = _intersect(phys_lo, phys_hi, vel_lo, vel_hi)
        else:
            phys_lo, phys_hi = -box[n:], box[:n].copy()
        if self._jerk_free:  # |u - a| <= 2 amax <= jerk dt: the jerk rows cannot bind
            return phys_lo, phys_hi, phys_lo, phys_hi
        jd = self._jerk_dt2[:n]
        lo = np.maximum(phys_lo, a - jd)
        hi = np.minimum(phys_hi, a + jd)
        ok = lo <= hi
        if ok.all():
            return phys_lo, phys_hi, lo, hi
        return phys_lo, phys_hi, np.where(ok, lo, phys_lo), np.where(ok, hi, phys_hi)

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
        w_ahead = self._kin.manipulability_at(look)
        if w_ahead >= w:
            return 1.0
        return float(np.clip((w - stop) / (slow - stop), 0.0, 1.0))

    def _barrier_rows(self, v: np.ndarray) -> int:
        """Build every barrier row that some admissible u could bring near its bound:

            coef_u . u + coef_s . |u| >= rhs   (scaled by 2/dt^2: accelerations)

        into self._rs ([coef_u; coef_s], joint-major [2J, count]), self._rhs, self._strict (rhs
        plus the reserve for the next tick's estimate) and self._bval; returns count.

        B(x) = h - margin - sum_i w_i v_i^2/(2b_i) - sum_i |G_i| b_i dt^2/8 - E is the clearance
        left after braking from x; w_i = |G_i| counts joints that may move towards the barrier
        (all joints whose velocity can change sign within the tick, else those whose velocity
        points towards it). Requiring B_lin(x+) >= (1 - gamma) B(x), with v+^2 bounded by the
        linear v^2 + 2 v u dt + b s dt^2 (s >= |u|), gives the row.
        """
        cfg, dt, n = self.config, self.dt, self.n
        kin, bars = self._kin, self._barriers
        gamma = cfg.barrier_gamma
        if gamma != self._gamma_seen:
            self._set_gamma(gamma)
        margin = cfg.sphere_margin + _SOLVER_SLACK_M
        m2 = self._m2
        av = np.abs(v)
        # joint excursion bound over this tick and the stop after it (see braking.py), and the
        # same after a tick of full acceleration: how much the next tick's estimate can grow,
        # which the rows keep in reserve so that the next tick is certified too.
        # dd = x dt + 0.625 b dt^2 + (x + b dt)^2 / (2b) for x = |v| and |v| + b dt, written
        # with z = x + b dt as z (dt + z / (2b)) - 0.375 b dt^2
        dd = self._dd
        z = np.add(av, self._dd_shift)
        np.multiply(z, self._inv2b, out=dd)
        dd += dt
        dd *= z
        dd += self._dd_const
        np.multiply(dd[:, :, None], dd[:, None, :], out=self._sph_outer)
        # reach of the stop per unit gradient: v^2/(2b), or for a joint that stops within the
        # tick |v| dt - v^2/(2b) (>= v^2/(2b)), the value the row's bound gives braking; with it
        # braking always satisfies the row whenever B(x) >= 0
        turning = av <= self._bdt  # the velocity can change sign within the tick
        reach = m2[0, 2 * n:]
        np.multiply(v, v, out=reach)
        reach *= self._inv2b
        np.copyto(reach, av * dt - reach, where=turning)
        np.multiply(reach, self._c_gamma, out=m2[1, 2 * n:])
        np.multiply(v, -2.0 / dt, out=m2[1, :n])
        # Rows no admissible u can bring near their bound are left out (exactly: with |G_i|
        # bounded by the norms of the point Jacobians' columns at this q, the row holds over
        # the whole acceleration box).
        pj = self._pj
        np.multiply(av, 2.0 * dt / gamma, out=pj)
        pj += reach
        pj += self._pj_const
        sq, norm = self._jp_sq, self._jp_norm
        np.multiply(kin.jp, kin.jp, out=sq)
        np.matmul(self._ones3, sq, out=norm)
        np.sqrt(norm, out=norm)
        y = np.matmul(self._sph_x, self._sph_k.T, out=self._sph_y)  # [reach, e0, e1]
        t = np.dot(self._t_comb, y)
        h_all = bars.distances(kin.pos)
        self._h_all = h_all
        ta, tb = self._rb_ta, self._rb_tb
        t.take(bars.row_sphere, out=ta, mode="clip")
        t.take(bars.row_other, out=tb, mode="clip")
        ta += tb
        np.subtract(h_all, ta, out=ta)
        cand = np.less(ta, margin, out=self._rb_mask).nonzero()[0]
        if not self._screen:  # (tests: build every row, to check what the screen leaves out)
            cand = np.arange(len(h_all))
        self._cand = cand
        count = len(cand)
        if not count:
            self._bval = self._rhs = self._strict = _EMPTY
            self._rs = self._rs_empty
            return 0
        ra = bars.row_sphere.take(cand)
        rb = bars.row_other.take(cand)
        e = y[1:].take(ra, axis=1)
        e += y[1:].take(rb, axis=1)
        # joint-major [g; |g|; w] [3, J, R]: per-joint factors broadcast along whole rows
        gaw = np.empty((3, n, count))
        bars.gradients(cand, kin.jp, ra, rb, out=gaw[0].T[:, None, :])
        g, ag, wgt = gaw[0], gaw[1], gaw[2]
        self._gaw = gaw  # [g; |g|; w] of this tick's candidates (MPC terminal rows read it)
        np.abs(g, out=ag)
        np.multiply(g, np.sign(-v)[:, None], out=wgt)
        np.maximum(wgt, 0.0, out=wgt)
        np.copyto(wgt, ag, where=turning[:, None])
        # m2 @ [g; |g|; w]: row 0 is w . reach + |G| . b dt^2/8, row 1 the rest of rhs
        y2 = np.dot(m2, gaw.reshape(3 * n, count))
        base = h_all.take(cand)
        base -= margin
        base -= e[0]
        self._bval = base - y2[0]
        base *= self._c_gamma
        self._rhs = rhs = np.subtract(y2[1], base, out=base)
        # growth of the error bound by the next tick, kept in reserve by the strict rows
        growth = np.subtract(e[1], e[0], out=e[1])
        growth *= 2.0 / (dt * dt)
        self._strict = rhs + growth
        # the rows, joint-major: [coef_u; coef_s] [2J, R]
        self._rs = rs = np.empty((2 * n, count))
        np.multiply(wgt, np.multiply(v, self._c_u)[:, None], out=rs[:n])
        np.subtract(g, rs[:n], out=rs[:n])
        np.negative(wgt, out=rs[n:])
        return count

    def _corners(self, count: int, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per barrier row, its minimum and its maximum over the box [lo, hi]: a row is concave
        in each u_i, so per joint the minimum is at lo_i or hi_i, and the maximum there or at 0
        when the box contains 0."""
        if not count:
            return _EMPTY, _EMPTY
        n = self.n
        lh = self._lh
        lh[0, :n, 0] = lo
        lh[1, :n, 0] = hi
        np.abs(lh[:, :n], out=lh[:, n:])
        p = self._rs * lh  # [corner, 2J, R]
        f = np.add(p[:, :n], p[:, n:], out=p[:, :n])  # [corner, J, R]
        each = np.minimum(f[0], f[1])
        worst = np.dot(self._ones_n, each)
        np.maximum(f[0], f[1], out=each)
        if not (max(lo.tolist()) <= 0.0 <= min(hi.tolist())):
            floor = np.where((lo <= 0.0) & (hi >= 0.0), 0.0, -np.inf)
            np.maximum(each, floor[:, None], out=each)
        return worst, np.dot(self._ones_n, each)

    def _recover_rows(self) -> str:
        """Turn the rows whose barrier B is negative into 'B must not decrease' rows.

        A row asks B(x+) >= (1 - gamma) B(x): from inside the margin (B < 0) that is a rise of
        gamma |B| in one tick, which no admissible acceleration gives from rest, so every tick
        was infeasible and the arm held forever. Dropping the gamma term for those rows keeps
        them from getting worse while any motion that raises B (out of the margin) passes;
        rows with B >= 0 keep their full condition. Returns the note naming the barrier."""
        bval = self._bval
        inside = bval < 0.0
        # (less a nanometre, so that rounding cannot make standing still fail the row)
        lift = self._c_gamma * np.where(inside, bval - 1e-9, 0.0)
        self._rhs = self._rhs + lift
        self._strict = self._strict + lift
        r = int(np.argmin(bval))
        label = self._barriers.row_label(int(self._cand[r]))
        return f"recovering: inside the margin of {label} (B={bval[r]:.4f} m)"

    def _lost_certificate(self) -> str:
        """Why a tick can be infeasible: the stop from here is no longer certified clear of a
        barrier (an obstacle moved in, or the estimate grew at speed). Braking is still safe: the
        previous tick certified the stop from this very state."""
        bval = self._bval
        if not len(bval) or float(np.min(bval)) >= 0.0:
            return ""
        r = int(np.argmin(bval))
        label = self._barriers.row_label(int(self._cand[r]))
        return f": stop not certified clear of {label} (B={bval[r]:.4f} m)"

    def _objective_cbf(self, u_des: np.ndarray, a: np.ndarray) -> np.ndarray:
        n, rho = self.n, self.config.jerk_weight
        lin = self._weights * u_des
        lin += rho * a
        np.multiply(lin, -2.0, out=self._qvec[:n])
        lin /= self._weights + rho
        return lin

    def _objective_mpc(self, q, v, a, qr, vr, ar, fut, scale) -> np.ndarray:
        """Linear cost of tracking over the horizon (into qvec) and the first step of the
        unconstrained optimum: the references are the future ones when given (the first
        replaced by q_ref, the last held), else q_ref extrapolated with v_ref."""
        rho = self.config.jerk_weight
        if rho != self._mpc_rho:
            self._mpc_objective_matrices(rho)
        N = self._N
        z = self._mpc_z
        z[0] = q
        z[1] = v
        z[2] = a
        if vr is None:
            z[3] = 0.0
        else:
            np.multiply(vr, scale, out=z[3])
        if ar is None:
            z[4] = 0.0
        else:
            np.multiply(ar, scale, out=z[4])
        z[5] = qr
        if fut is not None:
            m = min(N, fut.shape[0])
            z[6:5 + m] = fut[1:m]
            z[5 + m:] = fut[m - 1]
            c, f = self._mpc_c_fut, self._mpc_f_fut
        else:
            z = z[:6]
            c, f = self._mpc_c_hold, self._mpc_f_hold
        qvec = np.dot(z.T, c, out=self._mpc_qvec)  # [J, N], joint-major like u
        if not self._w_all_one:
            qvec *= self._weights[:, None]
        u_free = np.dot(z.T, f)
        return np.negative(u_free, out=u_free)

    def _select(
        self, rhs: np.ndarray, worst: np.ndarray, lo: np.ndarray, hi: np.ndarray,
        u_free: np.ndarray,
    ) -> np.ndarray:
        """Indices (into the built rows) of the barrier rows that get a QP slot: rows that some
        u in the box could violate (their minimum over the box is below the bound), those
        closest to violation at the unconstrained optimum first."""
        sel = (worst < rhs).nonzero()[0]
        if len(sel) > self._slots:
            n = self.n
            uu = self._uu
            np.minimum(np.maximum(u_free, lo), hi, out=uu[:n])
            np.abs(uu[:n], out=uu[n:])
            at_guess = np.dot(uu, self._rs.take(sel, axis=1)) - rhs[sel]
            sel = sel[np.argpartition(at_guess, self._slots)[:self._slots]]
        return sel

    def _solve(self, q, v, lo, hi, u_free, rhs, worst, relax: bool):
        n = self.n
        sel = self._select(rhs, worst, lo, hi, u_free) if len(rhs) else _EMPTY_INDEX
        self._sel = sel
        used = len(sel)
        self._n_selected = used
        slot = self._slot_vals
        r0 = self._slot_row0
        if used:
            rs = self._rs.take(sel, axis=1)  # [2J, used]
            norm = np.abs(rs[:n]).max(axis=0)
            np.maximum(norm, 1e-9, out=norm)
            np.divide(rs, norm, out=slot[:used].T)
            np.divide(rhs.take(sel), norm, out=self._lo[r0:r0 + used])
        if self._slots_used > used:  # switch off what the last tick used and this one does not
            slot[used:self._slots_used] = 0.0
            self._lo[r0 + used:r0 + self._slots_used] = -np.inf
        if self.config.mode == "cbf":
            self._lo[:n] = lo
            self._up[:n] = hi
            # A only changes through the slots: nothing in them now or last tick, no change
            changed = bool(used or self._slots_used)
        else:
            # A changes through the slots and the terminal rows: nothing in either, no change
            changed = self._bounds_mpc(q, v, lo, hi, relax) or bool(used or self._slots_used)
        self._slots_used = used
        assert self._qp is not None
        return self._qp.solve(self._qvec, self._vals, self._lo, self._up, a_changed=changed)

    def _bounds_mpc(self, q, v, lo, hi, relax: bool) -> bool:
        """The horizon's bounds for this tick, and its soft terminal rows; True when the
        terminal rows' coefficients changed (or must be switched off)."""
        cfg, lim, dt, n, M = self.config, self._limits, self.dt, self.n, self._M
        lo_all, up_all = self._lo, self._up
        lo_all[self._u_index] = lo  # the first step's box; later blocks keep +-amax
        up_all[self._u_index] = hi
        if relax is not self._mpc_relaxed and self._jerk_rows:
            m1 = n * (M - 1)
            j0 = self._jerk_row0
            jd = np.repeat(lim.jerk * dt, M - 1)
            lo_all[j0:j0 + m1] = -np.inf if relax else -jd
            up_all[j0:j0 + m1] = np.inf if relax else jd
            self._mpc_relaxed = relax
        # velocity at the checked ticks: within the (scaled) limit, but never asking for more
        # than braking can do from the first step; position: the increments from q + k dt v.
        # Both as bound - x on [velocity; position] x [J, checks], the rows' order in lo / up
        lo_b, up_b, x = self._mpc_lo_b, self._mpc_up_b, self._mpc_x
        cap = up_b[0]
        np.subtract(np.abs(v)[:, None], self._mpc_vel_drop, out=cap)
        np.maximum(cap, self._vel_col if self._last_scale == 1.0
                   else (lim.velocity * self._last_scale)[:, None], out=cap)
        np.negative(cap, out=lo_b[0])
        np.multiply(v[:, None], self._mpc_x_dt, out=x)
        x[1] += q[:, None]
        np.subtract(lo_b, x, out=self._mpc_vplo)
        np.subtract(up_b, x, out=self._mpc_vpup)
        # soft terminal rows (first-order, a planning aid): this tick's barrier candidates that
        # some admissible horizon could bring within the margin, the most critical first
        t0, before = self._term_row0, self._term_used
        used = 0
        if not relax and len(self._cand):
            g = self._gaw[0]  # [J, rows] gradients of the candidates' distances
            h = self._h_all.take(self._cand)
            # lowest first-order distance after the horizon: h + N dt v . G - |G| . Delta_max
            w2 = self._mpc_w2
            np.multiply(v, self._mpc_horizon_dt, out=w2[:n])
            low = np.dot(w2, self._gaw[:2].reshape(2 * n, -1))
            low += h
            sel = (low < cfg.sphere_margin).nonzero()[0]
            used = len(sel)
            if used:
                pred = np.dot(w2[:n], g.take(sel, axis=1))  # with the current motion alone
                pred += h.take(sel)
                kt = self._term_slots
                if used > kt:
                    keep = np.argpartition(pred, kt)[:kt]
                    sel, pred, used = sel.take(keep), pred.take(keep), kt
                gs = g.take(sel, axis=1)
                norm = np.abs(gs).max(axis=0)
                np.maximum(norm, 1e-9, out=norm)
                np.divide(gs, norm, out=self._term_vals[:used, :n].T)
                np.subtract(cfg.sphere_margin, pred, out=pred)
                np.divide(pred, norm, out=lo_all[t0:t0 + used])
        if before > used:
            self._term_vals[used:before, :n] = 0.0
            lo_all[t0 + used:t0 + before] = -np.inf
        self._term_used = used
        return bool(used or before)

    def _binding_reason(self, ay: np.ndarray) -> str:
        """Name what bound the solution, from the QP's multipliers (|y|)."""
        parts = []
        k = self._n_selected
        if k:
            duals = ay[self._slot_row0:self._slot_row0 + k].tolist()
            j = max(range(k), key=duals.__getitem__)
            if duals[j] > 1e-6:
                row = int(self._cand[self._sel[j]])
                parts.append(f"barrier {self._barriers.row_label(row)}")
        names = self.robot.joint_names
        at_box = [names[i] for i, d in enumerate(ay[self._u_index].tolist()) if d > 1e-6]
        if at_box:
            parts.append("joint limits on " + ", ".join(at_box))
        return "; ".join(parts) if parts else "cost trade-off"

    def _repair(
        self, u: np.ndarray, v: np.ndarray, count: int
    ) -> tuple[np.ndarray | None, float]:
        """Check u against every built barrier row; if some row is short, the smallest blend
        (1 - lam) u + lam brake_u that satisfies them all, or None when even braking does not
        (rows are concave in u, so the blend's value is at least the blend of the values)."""
        if not count:
            return u, 0.0
        n = self.n
        uu = self._uu
        uu[:n] = u
        np.abs(u, out=uu[n:])
        rs = self._rs
        short = np.subtract(self._rhs, np.dot(uu, rs))
        if short.max() <= 0.0:
            return u, 0.0
        return _repair(u, v, self._amax, self.dt, rs[:n].T, rs[n:].T, self._rhs)

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
        n = self.n
        amax = self._amax
        v_new = u * dt
        v_new += v
        q_new = v + v_new  # q + v dt + u dt^2 / 2 = q + (v + v+) dt / 2
        q_new *= 0.5 * dt
        q_new += q
        chk = self._chk4
        np.abs(v_new, out=chk[:n])
        np.abs(u, out=chk[n:2 * n])
        chk[2 * n:3 * n] = q_new
        np.negative(q_new, out=chk[3 * n:])
        chk -= self._lim4
        if not chk.max() <= 0.0:  # (also for NaN) normally u is inside already: then the
            # clamps below would change nothing
            if not math.isfinite(_sum(u)):
                u = brake_acceleration(v, amax, dt)
            vel_lo = np.minimum((-lim.velocity - v) / dt, 0.0)
            vel_hi = np.maximum((lim.velocity - v) / dt, 0.0)
            u = np.minimum(np.maximum(u, np.maximum(vel_lo, -amax)), np.minimum(vel_hi, amax))
            q_new = q + v * dt + 0.5 * u * dt * dt
            over = (q_new > lim.upper) | (q_new < lim.lower)
            if over.any():  # only reachable through rounding: land exactly on the limit
                target = np.clip(q_new, lim.lower, lim.upper)
                u_fix = 2.0 * (target - q - v * dt) / (dt * dt)
                u = np.where(over, np.clip(u_fix, -amax, amax), u)
                q_new = np.where(over, target, q + v * dt + 0.5 * u * dt * dt)
            v_new = v + u * dt
        u = u.copy()
        self._q, self._v, self._a = q_new, v_new, u
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


_EMPTY = np.zeros(0)
# Soft terminal rows in the MPC (a planning aid): the bench's busiest tick needs 6 (p99: 4)
_TERMINAL_SLOTS = 8
_EMPTY_INDEX = np.zeros(0, dtype=np.int64)


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
