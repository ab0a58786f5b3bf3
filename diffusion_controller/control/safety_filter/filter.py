"""The MPC/CBF safety filter: the last thing every joint command passes before it leaves the loop.

The filter owns the COMMANDED state (q, v, a), a double integrator at dt = 1 / control_rate_hz:

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

SafetyFilter is the facade: it owns the state and the lock, and composes the stages
(buffers, problem, tracking, joint_box, barrier_rows, solve, commit) of this package.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Sequence
from dataclasses import fields, replace

import numpy as np

from diffusion_controller.control.barriers import CartesianBarriers
from diffusion_controller.control.braking import brake_acceleration, viability_bounds
from diffusion_controller.control.limits import tighten
from diffusion_controller.control.qp import FixedPatternQP
from diffusion_controller.control.robot_model import RobotModel
from diffusion_controller.control.safety_filter._shared import _sum
from diffusion_controller.control.safety_filter.barrier_rows import _BarrierRows
from diffusion_controller.control.safety_filter.buffers import _TickBuffers
from diffusion_controller.control.safety_filter.commit import _BrakeCommit
from diffusion_controller.control.safety_filter.config import LIVE_FIELDS, SafetyConfig, _vec
from diffusion_controller.control.safety_filter.joint_box import _JointBox
from diffusion_controller.control.safety_filter.problem import _Problems
from diffusion_controller.control.safety_filter.solve import _Solve
from diffusion_controller.control.safety_filter.tracking import _Tracking
from diffusion_controller.control.types import FilterResult, JointLimits, Sphere


class SafetyFilter(
    _TickBuffers, _Problems, _Tracking, _JointBox, _BarrierRows, _Solve, _BrakeCommit
):
    """Filters a reference (q, v, a) stream into commands that keep every safety guarantee.

    Thread-safe: step/brake (the loop) and the setters (e.g. ROS callbacks) share one lock.
    """

    def __init__(self, robot: RobotModel, config: SafetyConfig) -> None:
        self.robot = robot
        self.config = config
        self.config.validate()
        cfg = self.config
        self.n = robot.nq
        self.dt = 1.0 / cfg.control_rate_hz
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
        self._barriers = CartesianBarriers(robot, cfg.self_collision_pairs, len(cfg.obstacles),
                                           cfg.tool_links, len(cfg.grasp_objects))
        self._barriers.set_workspace(cfg.workspace_min, cfg.workspace_max, cfg.table_z)
        self._barriers.set_obstacles(cfg.obstacles)
        self._barriers.set_grasp_objects(cfg.grasp_objects)
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

    def continuation(self, steps: int, max_steps: int = 1000) -> np.ndarray:
        """The certified continuation of the committed state: [K, 3, J] (q, v, a) at the next K
        ticks of braking at the acceleration limit, the stop every barrier row and the position
        viability bound of this tick were certified for; K is `steps`, or more until every joint
        is at rest (at most `max_steps`), so the last point is a stop. What a trajectory
        controller may be sent beyond this tick: if no newer message replaces it, the arm comes
        to rest along a stop the filter vouched for, and the controller's hold of the last point
        is no velocity step. Does not change the filter's state."""
        q, v, _ = self.state
        b, dt = self._limits.acceleration, self.dt
        rows = []
        for k in range(max_steps):
            if k >= steps and not v.any():
                break
            u = brake_acceleration(v, b, dt)
            q = q + v * dt + 0.5 * u * dt * dt
            v = v + u * dt
            v[np.abs(v) < 1e-12] = 0.0
            rows.append((q, v, u))
        if not rows:
            return np.empty((0, 3, self.n))
        return np.array(rows)

    def follow_continuation(self, steps: int) -> np.ndarray:
        """Commit the first `steps` states of the certified continuation, as if the filter had
        commanded them ([steps, 3, J], q, v, a): the ticks a streamed trajectory's controller
        ran on the last message's continuation while the control loop missed them. The state
        stays one the filter vouched for (each continuation state can still stop)."""
        plan = self.continuation(steps)[:steps]
        if len(plan):
            with self._lock:
                self._q, self._v, self._a = (plan[-1][0].copy(), plan[-1][1].copy(),
                                             plan[-1][2].copy())  # fmt: skip
        return plan

    @property
    def barrier_row_counts(self) -> dict[str, int]:
        """Cartesian barrier rows by kind: workspace_rows, obstacle_rows, grasp_rows,
        self_collision_rows, and tool_rows (those of them acting on a tool sphere)."""
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
            bad = (lo > lim.acceleration + 1e-9) | (hi < -lim.acceleration - 1e-9)
            names = ", ".join(f"{n} ({x:.3f} rad/s)" for n, x, b in
                              zip(lim.names, va, bad, strict=False) if b)
            raise ValueError(f"reset: too fast to stop inside the position limits: {names}")
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

    def set_grasp_objects(self, spheres: Sequence[Sphere]) -> None:
        """Replace the grasp objects: spheres the tool (fingers) may touch and the body (links,
        hand) keeps grasp_margin from; centre and radius may change every tick. A body sphere
        already inside a new object's margin may only move out (margin recovery)."""
        spheres = list(spheres)
        with self._lock:
            bars = self._barriers
            if len(spheres) > bars.grasp_slots:
                bars.set_grasp_objects([])
                bars.resize(bars.obstacle_slots, len(spheres))
                bars.set_grasp_objects(spheres)
                self._build()
            else:
                bars.set_grasp_objects(spheres)
            self.config.grasp_objects = spheres

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
            if "grasp_objects" in changes:
                self.set_grasp_objects(candidate.grasp_objects)
            self.config = candidate
            if {"eps_abs", "eps_rel", "max_iter", "time_limit"} & set(changes):
                assert self._qp is not None
                self._qp.update_settings(**self._osqp_settings())

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
            if future_ref is not None and self.config.safety_mode == "mpc":
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
