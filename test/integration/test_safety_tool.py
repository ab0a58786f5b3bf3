"""Tool and body in the safety filter (issue 13): the fingers (`tool_links`) may come to
`tool_clearance` over the table and touch a grasp object, the links and the hand body keep
`sphere_margin` from the table and the keep-out spheres and `grasp_margin` from the grasp
objects; self-collision is what it was.

Property tests as for the other barriers (test_safety_properties.py): whatever the reference
stream (top-down grasps at random table points that overshoot into the table, jumps, NaN), every
commanded state, re-integrated as a double integrator, keeps each of those clearances (to a tenth
of a millimetre: the filter certifies the margins themselves, not just contact). Both modes.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from diffusion_controller.control import assembly, panda
from diffusion_controller.control.robot_model import RobotModel
from diffusion_controller.control.safety_filter import SafetyFilter
from diffusion_controller.control.types import Sphere
from diffusion_controller.ros import params

DT = 0.01
MARGIN = 0.02  # the body's sphere_margin
TOOL_CLEARANCE = 0.005
GRASP_MARGIN = 0.008  # the body's clearance from a grasp object (not the default, on purpose)
TOL = 1e-4  # m
TICKS = {"cbf": 300, "mpc": 200}
EXAMPLES = {"cbf": 40, "mpc": 12}
ROBOT = RobotModel.from_urdf(panda.panda_urdf_path())
GROUPS = np.array(ROBOT.sphere_groups)
TOOL = np.isin(GROUPS, panda.PANDA_FINGER_LINKS) & ROBOT.moving
BODY = ~np.isin(GROUPS, panda.PANDA_FINGER_LINKS) & ROBOT.moving
HAND = GROUPS == "panda_hand"
FINGERTIP = 0.0584 + 0.0538  # hand origin to fingertip along the hand's z axis (URDF + mesh)
# the hand pointing straight down, fingers along the world y axis
DOWN = np.diag([1.0, -1.0, -1.0]) @ np.array(
    [[np.cos(-np.pi / 4), -np.sin(-np.pi / 4), 0.0], [np.sin(-np.pi / 4), np.cos(-np.pi / 4), 0.0],
     [0.0, 0.0, 1.0]])


def _ik_down(q: np.ndarray, target: np.ndarray, iters: int = 60,
             goal: np.ndarray = DOWN) -> np.ndarray:
    """Joint positions with the hand origin at `target`, oriented as `goal` (default: pointing
    down), by damped least squares."""
    for _ in range(iters):
        pose = ROBOT.frame_pose(q, "panda_hand")
        rel = goal @ pose[:3, :3].T
        err = np.concatenate([target - pose[:3, 3], 0.5 * np.array(
            [rel[2, 1] - rel[1, 2], rel[0, 2] - rel[2, 0], rel[1, 0] - rel[0, 1]])])
        if np.linalg.norm(err) < 1e-9:
            break
        jac = ROBOT.ee_jacobian(q)
        q = q + jac.T @ np.linalg.solve(jac @ jac.T + 1e-8 * np.eye(6), err)
    return q


def _descent(x: float, y: float, tip_from: float, tip_to: float, steps: int) -> list[np.ndarray]:
    """A top-down approach at (x, y): joint references with the fingertips from `tip_from` to
    `tip_to` over the table (z = 0)."""
    q = _ik_down(panda.PANDA_READY_Q.copy(), np.array([x, y, 0.25 + FINGERTIP]), 300)
    for z in np.linspace(0.25, tip_from, 20):  # from high above, where the solve is easy
        q = _ik_down(q, np.array([x, y, z + FINGERTIP]))
    out = []
    for z in np.linspace(tip_from, tip_to, steps):
        q = _ik_down(q, np.array([x, y, z + FINGERTIP]))
        out.append(q.copy())
    return out


# grasp sites on the table: the pose with the fingertips 20 cm above it (where an example
# starts) and the grasp pose with them 3 cm below the table (the reference overshoots)
SITES = [(x, y) for x in (0.4, 0.5, 0.6) for y in (-0.15, 0.0, 0.15)]
_PATHS = {site: _descent(site[0], site[1], 0.20, -0.03, 8) for site in SITES}
ABOVE = {site: path[0] for site, path in _PATHS.items()}
GRASPS = {site: path[-1] for site, path in _PATHS.items()}
# the hand tipped by 70 degrees about the world y axis, its origin 3 cm over the table: the
# hand body (not the fingers) goes down to the table
_TIP = np.array([[np.cos(1.2), 0.0, np.sin(1.2)], [0.0, 1.0, 0.0],
                 [-np.sin(1.2), 0.0, np.cos(1.2)]])
TIPPED = {site: _ik_down(path[0], np.array([site[0], site[1], 0.03]), 200, _TIP @ DOWN)
          for site, path in _PATHS.items()}


def _clearances(q: np.ndarray, obstacles: list[Sphere], grasp: list[Sphere]) -> dict[str, float]:
    """Distances of the commanded state: tool and body over the table, body to the keep-out
    spheres and the grasp objects, and the self-collision pairs (all surfaces, no margins)."""
    p = ROBOT.sphere_positions(q)
    r = ROBOT.sphere_radii
    floor = p[:, 2] - r

    def to(spheres: list[Sphere], mask: np.ndarray) -> float:
        return min((float(np.min(np.linalg.norm(p[mask] - s.center, axis=1) - r[mask] - s.radius))
                    for s in spheres), default=np.inf)

    pairs = []
    for a, b in panda.PANDA_SELF_COLLISION_PAIRS:
        ia, ib = np.flatnonzero(np.equal(GROUPS, a)), np.flatnonzero(np.equal(GROUPS, b))
        d = np.linalg.norm(p[ia][:, None] - p[ib][None], axis=2) - r[ia][:, None] - r[ib][None]
        pairs.append(float(d.min()))
    return {"tool_floor": float(floor[TOOL].min()), "body_floor": float(floor[BODY].min()),
            "body_obstacle": to(obstacles, BODY), "tool_obstacle": to(obstacles, TOOL),
            "body_grasp": to(grasp, BODY), "tool_grasp": to(grasp, TOOL),
            "self": min(pairs)}


def _flat(spheres: list[Sphere]) -> list[float]:
    return [float(x) for s in spheres for x in (*s.center, s.radius)]


def _filter(mode: str, obstacles: list[Sphere], grasp: list[Sphere],
            **changes: object) -> SafetyFilter:
    """The filter as the node builds it from its settings (the table's defaults: the Panda's
    spheres and self-collision pairs, the table at z = 0, the fingers as the tool), with these
    obstacles (named obstacle0, ...) and grasp objects (grasp0, ...)."""
    values = params.defaults()
    values.update(safety_mode=mode, sphere_margin=MARGIN, tool_clearance=TOOL_CLEARANCE,
                  grasp_margin=GRASP_MARGIN, obstacles=_flat(obstacles),
                  grasp_objects=_flat(grasp), table_z=0.0)
    values.update(changes)
    return assembly.safety_filter_from_settings(panda.panda_urdf_path(), values)[1]


def _references(rng: np.random.Generator, p: dict, lim, q0: np.ndarray, site: tuple,
                ticks: int):
    """Mostly down onto the example's grasp site (into the table, the wrist turned by up to
    `tilt`), sometimes onto another site or with the hand tipped over (its body down to the
    table), jumps, targets far outside the limits, NaN."""
    target = GRASPS[site]
    for _ in range(ticks):
        if rng.random() < p["p_switch"]:
            u = rng.random()
            if u < 0.6:
                target = GRASPS[site] + rng.normal(0.0, p["tilt"], 7)
            elif u < 0.7:
                target = GRASPS[SITES[rng.integers(len(SITES))]] + rng.normal(0.0, p["tilt"], 7)
            elif u < 0.8:
                target = TIPPED[site] + rng.normal(0.0, p["tilt"], 7)
            elif u < 0.95:
                target = q0 + rng.normal(0.0, p["spread"], 7)
            else:
                target = rng.uniform(lim.lower - 3.0, lim.upper + 3.0)
        ref = target + rng.normal(0.0, p["walk"], 7)
        if rng.random() < p["p_nan"]:
            ref[rng.integers(7)] = np.nan
        yield ref


stream = st.fixed_dictionaries({
    "seed": st.integers(0, 2**32 - 1),
    "site": st.sampled_from(SITES),
    "p_switch": st.floats(0.005, 0.05),
    "p_nan": st.floats(0.0, 0.05),
    "tilt": st.floats(0.0, 0.6),
    "walk": st.floats(0.0, 0.03),
    "spread": st.floats(0.1, 1.0),
})
# objects on the table: radius and offset from the example's grasp site (0: right under it)
grasp_object = st.tuples(st.floats(0.01, 0.035), st.floats(-0.05, 0.05), st.floats(-0.05, 0.05))
obstacle = st.tuples(
    st.floats(0.2, 0.75), st.floats(-0.4, 0.4), st.floats(0.1, 0.7), st.floats(0.02, 0.1)
)


def _run(mode: str, p: dict, raw_grasp: list, raw_obstacles: list) -> None:
    rng = np.random.default_rng(p["seed"])
    site = p["site"]
    q0 = ABOVE[site] + rng.uniform(-0.05, 0.05, 7)
    grasp = [Sphere(np.array([site[0] + dx, site[1] + dy, rad]), rad, f"g{k}")
             for k, (rad, dx, dy) in enumerate(raw_grasp)]
    obstacles = [Sphere(np.array(o[:3]), o[3], f"o{k}") for k, o in enumerate(raw_obstacles)]
    c = _clearances(q0, obstacles, grasp)
    # the arm starts clear of every margin
    assume(c["tool_floor"] > 0.03 and c["body_floor"] > 0.03 and c["self"] > 0.03)
    assume(min(c["body_obstacle"], c["tool_obstacle"], c["body_grasp"]) > 0.025)
    f = _filter(mode, obstacles, grasp)
    lim = f.limits
    assume(np.all(q0 > lim.lower) and np.all(q0 < lim.upper))
    f.reset(q0)
    q, v = q0.copy(), np.zeros(7)
    for ref in _references(rng, p, lim, q0, site, TICKS[mode]):
        r = f.step(ref)
        a = r.accelerations
        q, v = q + v * DT + 0.5 * a * DT * DT, v + a * DT
        np.testing.assert_allclose(r.positions, q, atol=1e-9)
        np.testing.assert_allclose(r.velocities, v, atol=1e-9)
        q, v = r.positions, r.velocities
        assert np.all(q >= lim.lower - 1e-9) and np.all(q <= lim.upper + 1e-9)
        assert np.all(np.abs(v) <= lim.velocity + 1e-9)
        c = _clearances(q, obstacles, grasp)
        assert c["tool_floor"] >= TOOL_CLEARANCE - TOL, (c, r.reason)
        assert c["body_floor"] >= MARGIN - TOL, (c, r.reason)
        assert c["body_obstacle"] >= MARGIN - TOL, (c, r.reason)
        assert c["tool_obstacle"] >= MARGIN - TOL, (c, r.reason)
        assert c["body_grasp"] >= GRASP_MARGIN - TOL, (c, r.reason)
        assert c["self"] >= MARGIN - TOL, (c, r.reason)


@pytest.mark.parametrize("mode", ["cbf", "mpc"])
def test_tool_and_body_keep_their_clearances(mode: str) -> None:
    @settings(max_examples=EXAMPLES[mode], deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow])
    @given(p=stream, raw_grasp=st.lists(grasp_object, min_size=0, max_size=2),
           raw_obstacles=st.lists(obstacle, min_size=0, max_size=2))
    def check(p: dict, raw_grasp: list, raw_obstacles: list) -> None:
        _run(mode, p, raw_grasp, raw_obstacles)

    check()


def _hold(f: SafetyFilter, refs: list[np.ndarray], hold: int = 300):
    """Step through refs, then hold the last; the lowest clearances seen and the last result."""
    low: dict[str, float] = {}
    r = None
    reasons = set()
    for ref in refs + [refs[-1]] * hold:
        r = f.step(ref)
        # pushed hard into a barrier the solver may run out of iterations: it brakes and holds
        assert r.status in ("ok", "braking", "holding"), r.reason
        reasons.add(r.reason)
        for k, val in _clearances(r.positions, [], f.config.grasp_objects).items():
            low[k] = min(low.get(k, np.inf), val)
    low["reasons"] = " ".join(sorted(reasons))  # type: ignore[assignment]
    return low, r


@pytest.mark.parametrize("mode", ["cbf", "mpc"])
def test_a_chunk_down_to_a_table_top_grasp_is_admitted_for_the_fingers(mode: str) -> None:
    """The deployed settings (the parameter table's defaults): a top-down chunk that ends with
    the fingertips 1.5 cm over the table is followed to the end, which puts the finger spheres
    well inside the body's margin; the hand body stays out of it. Pushed on into the table, the
    fingers stop at tool_clearance and the hand body still keeps its margin."""
    values = params.defaults()
    values["safety_mode"] = mode
    _, f = assembly.safety_filter_from_settings(panda.panda_urdf_path(), values)
    margin, clearance = values["sphere_margin"], values["tool_clearance"]
    refs = _descent(0.5, 0.0, 0.25, 0.015, 200)
    f.reset(refs[0])
    low, r = _hold(f, refs)
    assert r.status == "ok" and np.max(np.abs(r.positions - refs[-1])) < 1e-3, r.reason
    tip = min((ROBOT.frame_pose(r.positions, link) @ [0.0, 0.0, 0.0538, 1.0])[2]
              for link in panda.PANDA_FINGER_LINKS)
    assert abs(tip - 0.015) < 1e-3
    assert low["tool_floor"] < margin - 0.01  # the tool is where the body may not go
    assert low["body_floor"] >= margin - TOL
    # on into the table: held, the tool at its clearance, the body at its margin or above
    low, r = _hold(f, _descent(0.5, 0.0, 0.015, -0.05, 100))
    assert clearance - TOL <= low["tool_floor"] < clearance + 0.002
    assert low["body_floor"] >= margin - TOL


def test_the_hand_body_is_held_at_its_margin_from_the_grasp_object_the_fingers_enclose() -> None:
    """A 5 cm object on the table under the hand: descending onto it, the finger spheres reach
    into the object (the tool may touch it) while the hand body comes to its margin from the
    object (grasp_margin) and stops there."""
    obj = Sphere(np.array([0.5, 0.0, 0.025]), 0.025, "cube")
    f = _filter("cbf", [], [obj])
    refs = _descent(0.5, 0.0, 0.25, 0.0, 250)
    f.reset(refs[0])
    low, _ = _hold(f, refs)
    assert low["tool_grasp"] < 0.0  # finger spheres overlap the object
    assert GRASP_MARGIN - TOL <= low["body_grasp"] < GRASP_MARGIN + 0.002, low  # at the margin
    assert "barrier grasp0:panda_hand" in low["reasons"], low["reasons"]
    # with the object in the body's margin from the start (it was set late), the hand may only
    # move out: a reference that pushes down is not followed further in
    g = f.state[0]
    f.set_grasp_objects([Sphere(obj.center + np.array([0.0, 0.0, 0.01]), obj.radius, "cube")])
    start = _clearances(g, [], f.config.grasp_objects)["body_grasp"]
    low, _ = _hold(f, [refs[-1]], hold=100)
    assert low["body_grasp"] >= min(start, GRASP_MARGIN) - TOL


def test_tool_links_leave_self_collision_and_every_other_row_as_they_were() -> None:
    """The tool changes two things only: the floor rows of the tool spheres keep tool_clearance,
    and grasp objects have rows for the body spheres alone. Self-collision rows, keep-out rows,
    and every other margin are those of a filter without a tool."""
    obstacles = [Sphere(np.array([0.5, 0.3, 0.3]), 0.05, "o0")]
    grasp = [Sphere(np.array([0.5, 0.0, 0.02]), 0.02, "g0")]
    tool = _filter("cbf", obstacles, grasp)
    plain = _filter("cbf", obstacles, [], tool_links=[])
    a, b = tool.barrier_row_counts, plain.barrier_row_counts
    assert a["self_collision_rows"] == b["self_collision_rows"] > 0
    assert a["obstacle_rows"] == b["obstacle_rows"] and a["workspace_rows"] == b["workspace_rows"]
    assert a["grasp_rows"] == int(BODY.sum()) and b["grasp_rows"] == 0
    bars = tool._barriers
    margins = bars.row_margins(MARGIN, TOOL_CLEARANCE, GRASP_MARGIN)
    labels = [bars.row_label(i) for i in range(bars.count)]
    for label, m in zip(labels, margins, strict=True):
        kind, _, link = label.partition(":")
        if kind == "floor" and link in panda.PANDA_FINGER_LINKS:
            assert m == TOOL_CLEARANCE
        elif kind == "grasp0":
            assert m == GRASP_MARGIN and link not in panda.PANDA_FINGER_LINKS
        else:
            assert m == MARGIN, label
    # the same commands wherever the tool's rows are far from binding (high above the table)
    q0 = panda.PANDA_READY_Q.copy()
    tool.reset(q0)
    plain.reset(q0)
    rng = np.random.default_rng(3)
    for _ in range(100):
        ref = q0 + rng.normal(0.0, 0.05, 7)
        np.testing.assert_allclose(tool.step(ref).positions, plain.step(ref).positions,
                                   atol=1e-9)


def test_fingers_may_start_inside_a_grasp_object() -> None:
    """A grasp object set while the fingers already enclose it (the object being held): no
    recovery, no hold; the arm moves freely, lifting it."""
    refs = _descent(0.5, 0.0, 0.02, 0.10, 100)
    p = ROBOT.sphere_positions(refs[0])
    obj = Sphere(np.array([0.5, 0.0, 0.02]), 0.01, "held")  # between the fingertips
    assert np.min(np.linalg.norm(p[TOOL] - obj.center, axis=1) - ROBOT.sphere_radii[TOOL]
                  - obj.radius) < 0.0  # the finger spheres overlap it
    assert _clearances(refs[0], [], [obj])["body_grasp"] > GRASP_MARGIN
    f = _filter("cbf", [], [obj])
    f.reset(refs[0])
    r = None
    for ref in refs + [refs[-1]] * 100:
        r = f.step(ref)
        assert r.status == "ok" and "recovering" not in r.reason, r.reason
    assert np.max(np.abs(r.positions - refs[-1])) < 1e-3


def test_tool_clearance_and_grasp_objects_change_live() -> None:
    """tool_clearance, grasp_margin and grasp_objects are live: a raised tool clearance holds the
    fingers higher from the next tick on; grasp objects may grow in number (the QP is rebuilt
    with more slots) and be cleared."""
    f = _filter("cbf", [], [])
    assert f.barrier_row_counts["grasp_rows"] == 0
    refs = _descent(0.5, 0.0, 0.25, -0.03, 200)
    f.reset(refs[0])
    f.update_config(tool_clearance=0.03)
    low, _ = _hold(f, refs, hold=200)
    assert 0.03 - TOL <= low["tool_floor"] < 0.03 + 0.002
    objects = [Sphere(np.array([0.3, y, 0.02]), 0.02, f"g{k}") for k, y in enumerate((-0.2, 0.2))]
    f.set_grasp_objects(objects)
    assert f.barrier_row_counts["grasp_rows"] == 2 * int(BODY.sum())
    f.update_config(grasp_margin=0.01, grasp_objects=[])
    assert f.config.grasp_objects == [] and f.config.grasp_margin == 0.01
    r = f.step(refs[-1])
    assert r.status == "ok", r.reason
    with pytest.raises(ValueError, match="tool_clearance"):
        f.update_config(tool_clearance=-0.01)
