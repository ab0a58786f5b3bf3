"""Fault detection latency and braking length, counted in ticks on an injected clock.

These are the deterministic halves of the end-to-end stop checks in test/ros/test_faults.py (which
count commands and cannot time anything on a loaded machine): a watchdog fault is detected at the
first tick whose clock reading is past its deadline, that tick already commands the brake, and the
brake reaches rest within the limits' bound (slowest joint's velocity limit over its deceleration
limit, in ticks, plus the partial landing tick), every joint's speed falling at every tick.
Deadlines are chosen off the tick grid (x.xx5 s) so "first tick past the deadline" is one tick.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from test_loop import DT, PANDA_URDF, Rig  # skips without pybullet_data (the Panda URDF)

from diffusion_controller.control.loop import BRAKING, HOLDING, RUNNING
from diffusion_controller.control.robot_model import RobotModel


@pytest.fixture(scope="module")
def robot() -> RobotModel:
    return RobotModel.from_urdf(PANDA_URDF)


def running_rig(robot: RobotModel, **deadlines) -> Rig:
    """A loop tracking a chunk at speed, with images fresh every tick."""
    rig = Rig(robot, **deadlines)
    rig.loop.set_enabled(True)
    rig.loop.note_image(rig.clock.t)
    rig.step(2)
    rig.loop.submit_chunk(rig.chunk(amplitude=0.2))
    for _ in range(30):
        rig.loop.note_image(rig.clock.t)
        rig.step(1)
    assert rig.loop.state == RUNNING and np.abs(rig.v).max() > 0.05
    return rig


def braking_bound(rig: Rig) -> int:
    lim = rig.filter.limits
    return math.ceil(float(np.max(lim.velocity / lim.acceleration)) / DT - 1e-9) + 1


def ticks_until_brake(rig: Rig, n: int, images: bool = True,
                      reasons: list[str] | None = None) -> tuple[list[str], list[np.ndarray]]:
    """Tick `n` times: the loop state and every joint's commanded speed after each tick (and
    the first fault reason, into `reasons`)."""
    states, speeds = [], []
    for _ in range(n):
        if images:
            rig.loop.note_image(rig.clock.t)
        cmd = rig.step(1)[0]
        assert cmd is not None
        states.append(rig.loop.state)
        speeds.append(np.abs(cmd.velocities))
        if reasons is not None:
            reasons.append((rig.loop.status().reasons or ("",))[0])
    return states, speeds


def assert_detected_at_then_brakes(rig: Rig, states: list[str], speeds: list[np.ndarray],
                                   tick: int) -> None:
    """Running through tick `tick` - 1, braking from tick `tick` (1-based), at rest in bound."""
    assert states[:tick - 1] == [RUNNING] * (tick - 1), states[:tick + 1]
    assert states[tick - 1] == BRAKING, states[:tick + 1]
    brake = np.array(speeds[tick - 2:])  # the last running speed, then the brake
    assert np.all(np.diff(brake, axis=0) <= 1e-12), "every joint's speed falls while braking"
    rest = next(i for i, s in enumerate(brake) if np.all(s == 0.0))
    assert rest <= braking_bound(rig), (rest, braking_bound(rig))
    assert states[-1] == HOLDING and np.all(brake[rest:] == 0.0)


def test_stale_joint_states_detected_at_the_first_tick_past_the_deadline(robot) -> None:
    rig = running_rig(robot, joint_state_timeout=0.055)
    rig.feed = False  # last stamp: the previous tick; ages 0.01, 0.02, ... at the next ticks
    states, speeds = ticks_until_brake(rig, 30)
    assert_detected_at_then_brakes(rig, states, speeds, tick=6)
    assert any("stale joint_states" in r for r in rig.loop.status().reasons)


def test_stale_image_detected_at_the_first_tick_past_the_deadline(robot) -> None:
    rig = running_rig(robot, image_timeout=0.105)
    # the last image is stamped a tick before the last running tick: ages 0.02, 0.03, ...
    states, speeds = ticks_until_brake(rig, 40, images=False)
    assert_detected_at_then_brakes(rig, states, speeds, tick=10)
    assert any("stale image" in r for r in rig.loop.status().reasons)


def test_missing_chunk_detected_at_the_first_tick_past_the_deadline(robot) -> None:
    rig = running_rig(robot, chunk_timeout=0.555)
    rig.loop.submit_chunk(rig.chunk(amplitude=0.2))
    ticks_until_brake(rig, 1)  # taken at this tick: ages 0.01, 0.02, ... at the next ticks
    states, speeds = ticks_until_brake(rig, 80)  # the chunk's data lasts 1.5 s: not the cause
    assert_detected_at_then_brakes(rig, states, speeds, tick=56)
    assert any("no fresh chunk" in r for r in rig.loop.status().reasons)


def test_tracking_error_detected_at_the_first_tick_it_is_measured(robot) -> None:
    rig = running_rig(robot, tracking_error_limit=0.1)
    rig.q = rig.q + np.array([0, 0, 0, 0.15, 0, 0, 0])  # the arm is pushed away
    reasons: list[str] = []
    states, speeds = ticks_until_brake(rig, 30, reasons=reasons)
    assert_detected_at_then_brakes(rig, states, speeds, tick=1)
    assert "tracking error" in reasons[0]
