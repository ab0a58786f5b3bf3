"""The URDF helper under launch-style global arguments: `ros2 launch` passes
`-r __node:=diffusion_controller`; the helper node that waits for the URDF must not take that name
(no clash, no lost /rosout), and a remap of the URDF topic must still reach it."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("rclpy", reason="rclpy is not installed")

from lifecycle_msgs.msg import State
from rcl_interfaces.msg import Log
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from std_msgs.msg import String

from diffusion_controller.control.panda import panda_urdf_path
from diffusion_controller.node_process import (
    CONTROLLER_MODULE,
    NodeProcess,
    child_env,
    write_params_file,
)

pytestmark = [pytest.mark.ros, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]


def test_helper_takes_no_global_arguments_and_follows_remaps(
    tmp_path: Path, tiny_model: str, listener
) -> None:
    latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)  # fmt: skip
    pub = listener.create_publisher(String, "/remapped_description", latched)
    with open(panda_urdf_path(), encoding="utf-8") as fh:
        pub.publish(String(data=fh.read()))
    logs: list[Log] = []
    listener.create_subscription(Log, "/rosout", logs.append, 100)
    params = write_params_file(tmp_path / "p.yaml", {
        "model_path": tiny_model, "urdf_path": "", "robot_description_timeout": 20.0,
        "backend": "torch", "inference_threads": 1, "warmup_runs": 1, "ddim_steps": 4,
        "table_z": -0.3, "joint_state_timeout": 0.15, "image_timeout": 0.6,
    })  # fmt: skip
    ctrl = NodeProcess(
        CONTROLLER_MODULE,
        ["--params-file", str(params), "-r", "__node:=diffusion_controller",
         "-r", "/robot_description:=/remapped_description"],
        tmp_path / "controller.log", {**child_env(), "OMP_NUM_THREADS": "1"}, cwd=ROOT,
    )  # fmt: skip
    try:
        listener.wait_for(lambda: listener.lifecycle_state() == State.PRIMARY_STATE_ACTIVE,
                          90.0, "the controller active with the remapped URDF")  # fmt: skip
        assert "configure failed" not in ctrl.log(), ctrl.log()[-3000:]
        names = listener.get_node_names()
        assert names.count("diffusion_controller") == 1, names
        assert "already registered" not in ctrl.log()
        # /rosout still carries the controller's log after the helper is gone (end of configure).
        listener.wait_for(
            lambda: any(m.name == "diffusion_controller" and m.msg.startswith("active:")
                        for m in list(logs)),
            10.0, "the controller's activation log on /rosout",
        )  # fmt: skip
    finally:
        code = ctrl.stop()
    assert code == 0, ctrl.log()[-3000:]
