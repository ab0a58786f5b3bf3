"""The gripper's command path (control/gripper.py): chunk dims -> clamped, rate-limited commands
that start from the measurement and hold whenever the arm does not track a chunk."""

from __future__ import annotations

import numpy as np
import pytest

from diffusion_controller.control.gripper import (
    GripperCommander,
    GripperPath,
    GripperSettings,
    settings_errors,
)
from diffusion_controller.control.types import Chunk
from diffusion_controller.data.gripper import GripperConfig

PERIOD = 0.01
TOPIC, TYPE = "gripper_controller/commands", "float64_multi_array"
S = GripperSettings(TOPIC, TYPE, width_min=0.01, width_max=0.07, max_speed=0.05)


def run(g: GripperCommander, t0: float, n: int, tracking: bool = True, seq: int | None = 1):
    return np.array([g.step(t0 + k * PERIOD, tracking, seq)[0] for k in range(n)])


def test_nothing_before_a_measurement_then_the_measurement_clamped() -> None:
    g = GripperCommander(1, S, PERIOD)
    assert g.step(0.0, False, None) is None
    g.measure([0.08])
    assert g.step(0.01, False, None)[0] == pytest.approx(0.07)  # inside the limits


def test_tracking_is_clamped_rate_limited_and_reaches_the_target() -> None:
    g = GripperCommander(1, S, PERIOD)
    g.measure([0.05])
    g.submit(0.0, 0.1, np.full((16, 1), 0.0), seq=1)  # asks below the minimum
    w = run(g, 0.0, 100)
    assert np.all(np.abs(np.diff(w)) <= S.max_speed * PERIOD + 1e-12)
    # the limit is per command, whatever the stamps say (a missed tick moves it no further)
    assert abs(g.step(5.0, True, 1)[0] - w[-1]) <= S.max_speed * PERIOD + 1e-12
    assert w[0] == pytest.approx(0.05 - S.max_speed * PERIOD)  # from the measurement
    assert w[-1] == pytest.approx(0.01)  # clamped at the min
    assert np.all(w >= S.width_min - 1e-12) and g.limited_ticks > 0


def test_interpolates_the_chunk_in_time() -> None:
    g = GripperCommander(1, GripperSettings(TOPIC, TYPE, width_min=0.0, width_max=0.08,
                                          max_speed=10.0),
                         PERIOD)
    g.measure([0.0])
    g.submit(1.0, 0.1, np.array([[0.0], [0.02], [0.04]]), seq=3)
    assert g.step(0.5, True, 3)[0] == pytest.approx(0.0)  # before t0: the first row
    assert g.step(1.05, True, 3)[0] == pytest.approx(0.01)
    assert g.step(1.15, True, 3)[0] == pytest.approx(0.03)
    assert g.step(9.0, True, 3)[0] == pytest.approx(0.04)  # after the end: the last row


def test_holds_its_last_command_whenever_the_arm_does_not_track() -> None:
    g = GripperCommander(1, S, PERIOD)
    g.measure([0.07])
    g.submit(0.0, 0.1, np.full((16, 1), 0.07), seq=1)
    g.submit(0.5, 0.1, np.full((16, 1), 0.01), seq=2)  # closing on an object
    w = run(g, 0.5, 40, seq=2)
    held = w[-1]
    g.measure([held + 0.01])  # the object stops the fingers: wider than the command
    # a fault, the e-stop, a pause: the arm brakes; the gripper neither opens nor closes
    assert np.all(run(g, 0.9, 50, tracking=False, seq=2) == held)
    assert np.all(run(g, 1.4, 10, tracking=True, seq=None) == held)  # no chunk in force
    assert np.all(run(g, 1.5, 10, tracking=True, seq=99) == held)  # a chunk it never saw
    # resuming: from the smaller of command and measurement, so the grip is not eased
    g.submit(1.6, 0.1, np.full((16, 1), 0.07), seq=4)  # the policy opens again
    w = run(g, 1.6, 5, seq=4)
    assert w[0] == pytest.approx(held + S.max_speed * PERIOD)
    assert g.held_ticks >= 70


def test_resuming_follows_fingers_that_closed_further() -> None:
    g = GripperCommander(1, S, PERIOD)
    g.measure([0.06])
    g.submit(0.0, 0.1, np.full((16, 1), 0.06), seq=1)
    run(g, 0.0, 5)
    run(g, 0.05, 5, tracking=False)
    g.measure([0.03])  # pushed closed by hand while stopped
    g.submit(0.2, 0.1, np.full((16, 1), 0.03), seq=2)
    assert g.step(0.2, True, 2)[0] == pytest.approx(0.03)  # continuous with the measurement


def test_fingers_opened_from_outside_are_followed_not_closed_again() -> None:
    """eval resets the scene while the controller is disabled: the hand, closed on nothing at
    the end of an episode, is open again. Re-enabled, the gripper must not close it by itself
    (on pick_place the policy then took the cube for grasped and carried nothing to a bin)."""
    g = GripperCommander(1, S, PERIOD)
    g.measure([0.07])
    g.submit(0.0, 0.1, np.full((16, 1), 0.01), seq=1)
    w = run(g, 0.0, 200)
    assert w[-1] == pytest.approx(0.01)
    g.measure([0.01])  # closed on nothing
    run(g, 2.0, 20, tracking=False)  # disabled: brakes, then quiet
    g.measure([0.07])  # the scene was reset: open
    held = run(g, 10.0, 20, tracking=False)  # re-enabled, holding until a chunk
    assert np.all(held == pytest.approx(0.07))
    # a held object keeps its squeeze: blocked 2 cm wider than the command, and steady
    g2 = GripperCommander(1, S, PERIOD)
    g2.measure([0.07])
    g2.submit(0.0, 0.1, np.full((16, 1), 0.01), seq=1)
    w = run(g2, 0.0, 200)
    g2.measure([0.03])
    g2.measure([0.03 + 0.004])  # within OPENED_TOL: the object's give, not an opening
    assert np.all(run(g2, 2.0, 50, tracking=False) == w[-1])


def test_joint_mapping_dims_and_bad_inputs() -> None:
    g = GripperCommander(2, S, PERIOD)
    g.measure([0.02, 0.03])
    g.submit(0.0, 0.1, np.tile([0.06, 0.01], (4, 1)), seq=1)
    out = g.step(0.01, True, 1)
    np.testing.assert_allclose(out, [0.0205, 0.0295])  # per dim, at most max_speed * period
    assert g.dims_for(1).shape == (4, 2) and g.dims_for(7) is None
    with pytest.raises(ValueError):
        g.submit(0.0, 0.1, np.zeros((4, 3)), seq=2)
    with pytest.raises(ValueError):
        g.submit(0.0, 0.1, np.full((4, 2), np.nan), seq=2)
    g.measure([np.nan, 0.0])  # ignored
    np.testing.assert_allclose(g.measured, [0.02, 0.03])


def test_settings_errors() -> None:
    base = {"gripper_width_limits": [0.0, 0.08], "gripper_command_topic": "g/c",
            "gripper_command_type": "float64_multi_array", "gripper_max_speed": 0.1}
    assert settings_errors(base) == []
    assert GripperSettings.from_values(base).width_max == 0.08
    for limits in ([0.08, 0.0], [-0.01, 0.05], [0.02], [0.01, 0.01]):
        assert settings_errors({**base, "gripper_width_limits": limits})
    assert settings_errors({**base, "gripper_command_topic": " "})
    with pytest.raises(ValueError, match="gripper_width_limits"):
        GripperSettings.from_values({**base, "gripper_width_limits": [1.0, 0.0]})


def test_gripper_path_splits_joins_and_commands_fingers() -> None:
    """The core's view: arm first, width last; the width is sent as [w/2, w/2]."""
    path = GripperPath(GripperConfig(), arm=3, settings=S, period=PERIOD)
    assert path.joints == ["panda_finger_joint1", "panda_finger_joint2"]
    to_model = np.array([2, 0, 1])
    q, v, state = path.joint_sample(np.array([0.1, 0.2, 0.3, 0.02, 0.025]), None, to_model)
    np.testing.assert_allclose(q, [0.1, 0.2, 0.3])
    assert v is None
    np.testing.assert_allclose(state, [0.3, 0.1, 0.2, 0.045])
    np.testing.assert_allclose(path.commander.measured, [0.045])
    chunk = Chunk(1.0, 0.1, np.c_[np.zeros((4, 3)), np.full(4, 0.03)], seq=5)
    arm = path.split(chunk)
    assert arm.positions.shape == (4, 3) and arm.seq == 5
    back = path.join(arm)
    np.testing.assert_array_equal(back.positions, chunk.positions)
    first = path.command(1.0, True, 5)
    np.testing.assert_allclose(first, [0.0225 - 0.00025, 0.0225 - 0.00025])  # from 0.045 m
    assert path.command(1.01, False, 5)[0] == first[0]  # held while the arm is not tracking
