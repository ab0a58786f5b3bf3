"""An operator in the loop and a loop that starts where the arm is, through the real node.

- start_enabled false: active, but nothing is published until ~/enable true; ~/enable while the
  e-stop is latched is refused with the reason; a deadman enable (enable_timeout) lapses.
- the loop never starts from an old joint state: a 10 s old one, then fresh ones 0.3 rad away,
  and the first command lies within one tick's motion of the fresh measurement.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="rclpy is not installed")

from lifecycle_msgs.msg import State
from sensor_msgs.msg import JointState

JOINTS = [f"panda_joint{i}" for i in range(1, 8)]
HOME = np.array([0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785])  # the probe's arm starts here

pytestmark = [pytest.mark.ros, pytest.mark.slow]


def _state_or_none(probe):
    try:
        return probe.lifecycle_state()
    except Exception:  # service not up yet
        return None


def _publish_old_state(probe, q: np.ndarray, age: float) -> None:
    msg = JointState()
    stamp = probe.get_clock().now().nanoseconds * 1e-9 - age
    msg.header.stamp.sec = int(stamp)
    msg.header.stamp.nanosec = int((stamp % 1.0) * 1e9)
    msg.name = list(JOINTS)
    msg.position = [float(x) for x in q]
    msg.velocity = [0.0] * 7
    probe.js_pub.publish(msg)


def test_the_first_command_starts_from_a_fresh_measurement(start_controller, tiny_model, probe,
                                                           urdf_path) -> None:
    probe.publish_joints = False
    ctrl = start_controller(model_path=tiny_model)
    try:
        probe.wait_for(lambda: _state_or_none(probe) == State.PRIMARY_STATE_ACTIVE, 60.0,
                       "the node to come up active")
        for _ in range(20):  # only a 10 s old state at HOME: the loop must not start from it
            _publish_old_state(probe, HOME, 10.0)
            time.sleep(0.05)
        assert probe.command_log() == [], "nothing is commanded from an old measurement"
        moved = HOME + 0.3
        with probe._lock:
            probe.q = moved.copy()
        probe.publish_joints = True
        probe.wait_for(lambda: len(probe.command_log()) > 0, 15.0, "the first command")
        first = probe.command_log()[0]
        from diffusion_controller.control.robot_model import RobotModel

        vmax = RobotModel.from_urdf(urdf_path, joint_names=JOINTS).urdf_limits().velocity
        assert np.max(np.abs(first.q - moved) - 0.5 * vmax * 0.01) <= 1e-9, first.q - moved
    finally:
        code = ctrl.stop()
    assert code == 0, ctrl.log()[-3000:]


def test_operator_enable_estop_and_deadman(start_controller, tiny_model, probe) -> None:
    ctrl = start_controller(model_path=tiny_model, start_enabled=False, enable_timeout=1.5)
    try:
        probe.wait_for(lambda: _state_or_none(probe) == State.PRIMARY_STATE_ACTIVE, 60.0,
                       "the node to come up active")
        time.sleep(1.5)
        assert probe.command_log() == [], "active but motion-disabled: nothing is published"
        assert probe.trigger("estop").success
        refused = probe.enable(True)
        assert not refused.success and "e-stop latched" in refused.message
        assert probe.trigger("reset").success
        ok = probe.enable(True)
        assert ok.success and "enable_timeout" in ok.message, ok.message
        probe.wait_for(lambda: len(probe.command_log()) > 20, 15.0, "commands after enable")
        # not renewed: the enable lapses, the arm brakes to a stop and the node goes quiet
        probe.wait_for(lambda: probe.diag_value("control loop", "enabled") == "false", 15.0,
                       "the lapsed enable on /diagnostics")
        # it brakes to a stop, then publishes nothing more (however slow the host is)
        def quiet() -> bool:
            n = len(probe.command_log())
            time.sleep(0.5)
            return len(probe.command_log()) == n

        probe.wait_for(quiet, 15.0, "the node to go quiet after the lapse")
        n = len(probe.command_log())
        assert probe.enable(True).success  # renewing starts it again
        probe.wait_for(lambda: len(probe.command_log()) > n + 10, 15.0, "commands after renewal")
    finally:
        code = ctrl.stop()
    assert code == 0, ctrl.log()[-3000:]
