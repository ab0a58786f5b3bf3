"""A gripper model through the ROS-free controller core, with no DDS.

`runtime.controller.Controller` is built from the settings table's defaults (with narrowed gripper
limits and speed), the Panda URDF and a small random model whose actions are the 7 arm joints,
then the width (`make_random_artifact(..., gripper=GripperConfig())`), run by torch in this
process. The test is the arm's perfect controller and the hand: each joint state is the last arm
command and the fingers at the last gripper command, asked for as ros/command_output.py asks for
it (`Controller.gripper_command(stamp)` after each arm command). Time is a simulated stamp clock
advanced 10 ms per tick and the test runs the loop's tick and the worker's inference itself, so
only behaviour is checked, never timing.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch", reason="torch runs the random test model")
pytest.importorskip("pybullet_data", reason="pybullet_data ships the Panda URDF")

from diffusion_controller.control import assembly
from diffusion_controller.control.panda import PANDA_READY_Q, panda_urdf_path
from diffusion_controller.control.types import Command
from diffusion_controller.data.gripper import GripperConfig
from diffusion_controller.policy.config import EncoderConfig, UNetConfig
from diffusion_controller.runtime.controller import BuildError, Controller
from diffusion_controller.runtime.random_model import PANDA_JOINTS, make_random_artifact

DT = 0.01
FINGERS = ["panda_finger_joint1", "panda_finger_joint2"]
LIMITS = (0.01, 0.07)  # m, narrower than the hand's 0..0.08 so the clamp shows
SPEED = 0.05  # m/s per gripper dim (the width)


@dataclass
class Rig:
    """The core, the fingers' state and a stamp clock the test advances."""

    ctrl: Controller
    t: float = 100.0
    half: float = 0.04  # each finger's position: the hand starts open (0.08 m)
    commands: list[Command] = field(default_factory=list)
    grips: list[np.ndarray] = field(default_factory=list)  # one per arm command (or None)

    def run(self, seconds: float, fingers: bool = True) -> list[np.ndarray | None]:
        """Tick for `seconds` of simulated time; the gripper commands sent meanwhile."""
        first = len(self.grips)
        image = np.full((*self.ctrl.image_size, 3), 90, dtype=np.uint8)
        for _ in range(round(seconds / DT)):
            self.t += DT
            last = self.commands[-1] if self.commands else None
            q = PANDA_READY_Q if last is None else last.positions
            qd = np.zeros(7) if last is None else last.velocities
            names, pos, vel = list(PANDA_JOINTS), list(q), list(qd)
            if fingers:
                names += FINGERS
                pos += [self.half, self.half]
                vel += [0.0, 0.0]
            refused = self.ctrl.joint_state(names, pos, vel, self.t)
            if fingers:
                assert refused is None, refused
            tick = round((self.t - 100.0) / DT)
            if tick % 3 == 0:
                assert self.ctrl.image("camera", self.t, lambda: image) is None
            if tick % 10 == 0:
                self.ctrl.worker.step_once()
            n = len(self.commands)
            self.ctrl.loop.tick(now_mono=self.t)
            for cmd in self.commands[n:]:  # what ros/command_output does after each command
                g = self.ctrl.gripper_command(cmd.stamp)
                self.grips.append(g)
                if g is not None:
                    self.half = float(g[0])  # the fingers follow at once
        return self.grips[first:]


def _values(model: str, **changes: object) -> dict:
    settings: dict[str, object] = {
        "model_path": model, "backend": "torch", "inference_mode": "thread",
        "inference_timeout": 30.0, "inference_threads": 1, "warmup_runs": 1, "ddim_steps": 4,
        "gripper_width_limits": list(LIMITS), "gripper_max_speed": SPEED}
    return assembly.default_values(**{**settings, **changes})


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> str:
    return make_random_artifact(
        tmp_path_factory.mktemp("gripper_core"), gripper=GripperConfig(), image_size=(32, 32),
        horizon=16, action_dt=0.1,
        encoder=EncoderConfig(variant="small", width=8, group_size=8, num_keypoints=8,
                              feature_dim=16),
        unet=UNetConfig(down_dims=[32, 64], kernel_size=3, n_groups=8, step_embed_dim=32))


@pytest.fixture(scope="module")
def rig(model: str) -> Iterator[Rig]:
    holder: dict[str, Rig] = {}
    ctrl = Controller.build(
        _values(model), Path(panda_urdf_path()).read_text(encoding="utf-8"),
        clock=lambda: holder["rig"].t, on_command=lambda c: holder["rig"].commands.append(c))
    r = Rig(ctrl=ctrl)
    holder["rig"] = r
    ctrl.enable(True)
    try:
        yield r
    finally:
        ctrl.close()


def _widths(grips: list[np.ndarray | None]) -> np.ndarray:
    sent = [g for g in grips if g is not None]
    assert sent, "no gripper command was sent"
    for g in sent:
        assert g.shape == (2,) and g[0] == g[1]  # [w/2, w/2]
    return np.array([2.0 * g[0] for g in sent])


def test_gripper_commands_follow_the_chunks_within_limits_and_speed(rig: Rig) -> None:
    ctrl = rig.ctrl
    assert ctrl.gripper is not None and ctrl.gripper.joints == FINGERS
    assert ctrl.buffer.joint_names == [*PANDA_JOINTS, "gripper/width"]
    grips = rig.run(2.0)
    assert ctrl.loop.state == "running", ctrl.loop.status().reasons
    assert len(rig.commands) >= 150 and ctrl.status().loop.chunks_accepted >= 5
    w = _widths(grips)
    assert len(w) == len(grips)  # the fingers were measured from the first tick
    assert np.all(w >= LIMITS[0] - 1e-12) and np.all(w <= LIMITS[1] + 1e-12)
    assert w[0] == pytest.approx(LIMITS[1])  # from the measured 0.08 m, clamped
    # one command moves the width at most max_speed * period, whatever the chunks ask
    assert np.all(np.abs(np.diff(w)) <= SPEED * DT + 1e-12)
    assert np.ptp(w) > 0.002, w  # it followed the policy's widths, not only held
    # the warm start sees the chunk in the model's layout again: 7 joints, then the width
    cur = ctrl._current_chunk_model_order()
    assert cur is not None and np.asarray(cur.positions).shape[1] == 8


def test_estop_holds_the_gripper_and_reset_resumes(rig: Rig) -> None:
    rig.run(0.3)
    held = rig.grips[-1]
    rig.ctrl.estop()
    w = _widths(rig.run(1.0))
    assert rig.ctrl.loop.state == "estopped"
    assert np.all(w == 2.0 * held[0])  # never opens (nor closes) by itself
    ok, why = rig.ctrl.reset()
    assert ok, why
    rig.run(1.0)
    assert rig.ctrl.loop.state == "running", rig.ctrl.loop.status().reasons
    w = _widths(rig.grips)
    assert np.all(np.abs(np.diff(w)) <= SPEED * DT + 1e-12)


def test_joint_states_without_the_fingers_are_refused(rig: Rig) -> None:
    before = rig.ctrl.status().rejected.get("joint_states_missing", 0)
    rig.t += DT
    refused = rig.ctrl.joint_state(PANDA_JOINTS, PANDA_READY_Q, np.zeros(7), rig.t)
    assert refused is not None and refused.kind == "missing"
    assert "panda_finger_joint1" in refused.reason
    assert rig.ctrl.status().rejected["joint_states_missing"] == before + 1


def test_bad_gripper_settings_fail_the_build(model: str) -> None:
    with pytest.raises(BuildError, match="gripper_width_limits must satisfy 0 <= min < max"):
        Controller.build(_values(model, gripper_width_limits=[0.05, 0.01]), "",
                         clock=lambda: 0.0, on_command=lambda c: None)
