"""The whole controller core, from the shipped model artifact to joint commands, with no DDS.

`runtime.controller.Controller` is built from the parameter table's defaults, the Panda URDF and
models/panda_reach_diffusion (onnxruntime on the CPU, in this process), exactly as the lifecycle
node builds it. A PyBullet SimWorld plays the arm and the camera. Time is a simulated stamp clock
advanced 10 ms per tick, and the test drives the loop's tick and the worker's inference itself
(10 Hz of simulated time), so what is checked is behaviour, never timing: a loaded machine only
makes it slower.

The controller's joint order is deliberately not the model's (reversed), and the joint states
arrive in a third order with the fingers in between, so every mapping between them is exercised.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("pybullet_data", reason="pybullet_data ships the Panda URDF")

from diffusion_controller.control import assembly
from diffusion_controller.control.panda import panda_urdf_path
from diffusion_controller.control.types import Chunk, Command
from diffusion_controller.runtime.controller import BuildError, Controller
from diffusion_controller.settings.controller import defaults
from diffusion_controller.sim.kinematics import ARM_JOINTS
from diffusion_controller.sim.task import sample_task
from diffusion_controller.sim.world import SimWorld

MODEL = Path(__file__).resolve().parents[2] / "models" / "panda_reach_diffusion"
DT = 0.01
TOL = 1e-9


def _values(mode: str = "thread") -> dict:
    return assembly.default_values(
        model_path=str(MODEL), backend="onnxruntime", inference_mode=mode,
        inference_timeout=30.0,  # a loaded machine is slow, not broken
        inference_threads=1, warmup_runs=1,
        joint_names=list(reversed(defaults()["joint_names"])))  # not the model's order


@dataclass
class Rig:
    """The core, the simulated arm and camera, and a stamp clock the test advances."""

    ctrl: Controller
    world: SimWorld
    t: float = 100.0
    commands: list[Command] = field(default_factory=list)
    chunks: list[Chunk] = field(default_factory=list)
    # controller order -> the world's (ARM_JOINTS) order, and message order for joint states
    to_world: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.intp))
    world_names: tuple[str, ...] = (*ARM_JOINTS, "panda_finger_joint1", "panda_finger_joint2")

    def run(self, seconds: float) -> list[Command]:
        """Tick the core for `seconds` of simulated time; the commands published meanwhile."""
        first = len(self.commands)
        for _ in range(round(seconds / DT)):
            self.t += DT
            q, v = self.world.joint_state()  # 9 joints: arm, then fingers
            names = list(self.world_names)
            # in a third order: fingers first, the arm reversed in pairs
            order = [7, 8, 1, 0, 3, 2, 5, 4, 6]
            refused = self.ctrl.joint_state([names[i] for i in order], q[order], v[order],
                                            self.t)
            assert refused is None, refused
            tick = round((self.t - 100.0) / DT)
            if tick % 3 == 0:  # a 33 Hz camera
                img = self.world.render()
                assert self.ctrl.image("camera", self.t, lambda img=img: img) is None
            if tick % 10 == 0:  # 10 Hz inference, no simulated latency
                self.ctrl.worker.step_once()
            self.ctrl.loop.tick(now_mono=self.t)
            if len(self.commands) > first:
                self.world.command(self.commands[-1].positions[self.to_world])
            self.world.step(DT)
        return self.commands[first:]



def _make_rig(mode: str) -> Rig:
    values = _values(mode)
    world = SimWorld()
    world.reset(sample_task(3))
    holder: dict[str, Rig] = {}
    try:
        ctrl = Controller.build(
            values, Path(panda_urdf_path()).read_text(encoding="utf-8"),
            clock=lambda: holder["rig"].t,
            on_command=lambda cmd: holder["rig"].commands.append(cmd),
            on_chunk=lambda chunk: holder["rig"].chunks.append(chunk))
    except BaseException:
        world.close()
        raise
    names = list(values["joint_names"])
    r = Rig(ctrl=ctrl, world=world,
            to_world=np.array([names.index(n) for n in ARM_JOINTS], dtype=np.intp))
    holder["rig"] = r
    ctrl.enable(True)
    return r


@pytest.fixture(scope="module")
def rig() -> Iterator[Rig]:
    r = _make_rig("thread")
    try:
        yield r
    finally:
        r.ctrl.close()
        r.world.close()


def _check_stream(cmds: list[Command], limits: object, previous: Command | None) -> None:
    """Every command within the limits and one tick's motion away from the one before."""
    lo, hi = np.asarray(limits.lower), np.asarray(limits.upper)  # type: ignore[attr-defined]
    vmax = np.asarray(limits.velocity)  # type: ignore[attr-defined]
    amax = np.asarray(limits.acceleration)  # type: ignore[attr-defined]
    for cmd in cmds:
        assert np.all(np.isfinite(cmd.positions))
        assert np.all(cmd.positions >= lo - TOL) and np.all(cmd.positions <= hi + TOL)
        assert np.all(np.abs(cmd.velocities) <= vmax + 1e-6)
        assert np.all(np.abs(cmd.accelerations) <= amax + 1e-6)
        if previous is not None:
            assert cmd.stamp == pytest.approx(previous.stamp + DT, abs=1e-6)
            # one tick of motion at the previous and new velocity, nothing more
            step = np.abs(cmd.positions - previous.positions)
            assert np.all(step <= np.maximum(np.abs(cmd.velocities),
                                             np.abs(previous.velocities)) * DT + 1e-6)
            assert np.all(np.abs(cmd.velocities - previous.velocities) <= amax * DT + 1e-6)
        previous = cmd


def test_commands_follow_the_policy_within_the_limits(rig: Rig) -> None:
    q0 = rig.world.arm_state()[0]
    cmds = rig.run(2.0)
    assert len(cmds) >= 150, f"{len(cmds)} commands in 200 ticks: {rig.ctrl.status().loop}"
    assert rig.chunks, rig.ctrl.status().worker
    assert rig.ctrl.loop.state == "running", rig.ctrl.loop.status().reasons
    _check_stream(cmds, rig.ctrl.safety.limits, None)
    # The commands are in the controller's (reversed) order: the world follows them, and they
    # head where the policy's chunks point.
    last = rig.chunks[-1]
    goal = np.asarray(last.positions)[-1]
    start = q0[rig.to_world.argsort()]  # world order -> controller order
    end = cmds[-1].positions
    assert np.linalg.norm(end - goal) < np.linalg.norm(start - goal) - 0.05
    assert np.max(np.abs(rig.world.arm_state()[0] - end[rig.to_world])) < 0.05
    status = rig.ctrl.status()
    assert status.rejected == {} and status.received["joint_states"] >= 200
    assert status.loop.chunks_accepted >= 10


def test_live_change_set_takes_effect_whole(rig: Rig) -> None:
    rig.run(0.5)
    old = rig.ctrl.safety
    old_limits = old.limits
    before = rig.commands[-1]
    sphere = [0.9, 0.9, 0.9, 0.05]  # far from the arm: feasible, but present in the filter
    rig.ctrl.apply_live({"velocity_scale": 0.2, "acceleration_scale": 0.3, "obstacles": sphere,
                         "chunk_timeout": 0.8, "ddim_steps": 6})
    new = rig.ctrl.safety
    assert new is not old
    assert new.config.velocity_scale == 0.2 and new.config.acceleration_scale == 0.3
    assert [(list(s.center), s.radius) for s in new.config.obstacles] == [([0.9, 0.9, 0.9], 0.05)]
    assert rig.ctrl.loop.watchdogs.config.chunk_timeout == 0.8
    assert rig.ctrl.worker.settings.ddim_steps == 6
    assert rig.ctrl.values["velocity_scale"] == 0.2
    assert np.all(new.limits.velocity < old_limits.velocity)
    # The hand-over continues from the commanded state: within the old limits while the new
    # filter decelerates, within the new ones once it has.
    cmds = rig.run(1.0)
    _check_stream(cmds, old_limits, before)
    _check_stream(cmds[50:], new.limits, None)
    assert rig.ctrl.loop.state == "running", rig.ctrl.loop.status().reasons


def test_failed_live_change_changes_nothing(rig: Rig) -> None:
    rig.run(0.3)
    safety, watch = rig.ctrl.safety, rig.ctrl.loop.watchdogs.config
    settings, values = rig.ctrl.worker.settings, dict(rig.ctrl.values)
    horizon = rig.ctrl.model_config.horizon
    with pytest.raises(ValueError, match="prefix_steps"):  # the model's horizon bounds it
        rig.ctrl.apply_live({"velocity_scale": 0.1, "tracking_error_limit": 0.3,
                             "prefix_steps": horizon})
    with pytest.raises(ValueError, match="mpc_horizon cannot change while running"):
        rig.ctrl.apply_live({"velocity_scale": 0.1, "mpc_horizon": 12})
    with pytest.raises(ValueError, match="workspace_min"):  # the set is inconsistent
        rig.ctrl.apply_live({"velocity_scale": 0.1, "workspace_min": [2.0, 2.0, 2.0]})
    with pytest.raises(ValueError, match="num_samples"):
        rig.ctrl.apply_live({"acceleration_scale": 0.1, "num_samples": 10_000})
    assert rig.ctrl.safety is safety
    assert rig.ctrl.loop.watchdogs.config is watch
    assert rig.ctrl.worker.settings is settings
    assert rig.ctrl.values == values
    before = rig.commands[-1]
    cmds = rig.run(0.3)
    _check_stream(cmds, safety.limits, before)


def test_estop_brakes_and_reset_resumes(rig: Rig) -> None:
    rig.run(0.2)
    rig.ctrl.estop()
    limits = rig.ctrl.safety.limits
    before = rig.commands[-1]
    cmds = rig.run(1.0)
    _check_stream(cmds, limits, before)
    assert rig.ctrl.loop.state == "estopped"
    assert np.all(np.abs(cmds[-1].velocities) < 1e-6)
    ok, why = rig.ctrl.reset()
    assert ok, why
    rig.run(1.0)
    assert rig.ctrl.loop.state == "running", rig.ctrl.loop.status().reasons


def test_refused_inputs_are_counted_and_named(rig: Rig) -> None:
    names = list(rig.world_names)
    q, v = rig.world.joint_state()
    refused = rig.ctrl.joint_state(names[:6], q[:6], v[:6], rig.t + DT)
    assert refused is not None and refused.kind == "missing" and "panda_joint7" in refused.reason
    refused = rig.ctrl.image("camera", rig.t + 5.0, lambda: rig.world.render())
    assert refused is not None and refused.kind == "future"
    status = rig.ctrl.status()
    assert status.rejected["joint_states_missing"] == 1
    assert status.rejected["image[camera]_future"] == 1
    assert "future" in status.last_rejection


def test_build_failures_name_the_setting(tmp_path: Path) -> None:
    values = _values()
    values["model_path"] = str(tmp_path / "missing")
    with pytest.raises(BuildError, match="does not exist"):
        Controller.build(values, "", clock=lambda: 0.0, on_command=lambda cmd: None)
    values = _values()
    urdf_calls: list[int] = []

    def urdf() -> str:
        urdf_calls.append(1)
        return "<robot name='x'/>"

    with pytest.raises(BuildError, match="invalid parameters: velocity_scale"):
        Controller.build({**values, "velocity_scale": 7.0}, urdf, clock=lambda: 0.0,
                         on_command=lambda cmd: None)
    with pytest.raises(BuildError, match="parameters do not fit the model: prefix_steps 16"):
        Controller.build({**values, "prefix_steps": 16}, urdf, clock=lambda: 0.0,
                         on_command=lambda cmd: None)
    assert urdf_calls == []  # refused from the artifact's config, before the backend loads
    with pytest.raises(BuildError, match="URDF does not fit joint_names"):
        Controller.build(values, urdf, clock=lambda: 0.0, on_command=lambda cmd: None)
    assert urdf_calls == [1]  # read once the model had loaded


def test_inference_process_mode_drives_the_same_core() -> None:
    """The default deployment: the network in a child process, the rest as above."""
    r = _make_rig("process")
    try:
        assert r.ctrl.backend.pid is not None
        cmds = r.run(1.0)
        assert len(r.chunks) >= 5, r.ctrl.status().worker
        assert r.ctrl.loop.state == "running", r.ctrl.loop.status().reasons
        _check_stream(cmds, r.ctrl.safety.limits, None)
        status = r.ctrl.status()
        assert status.inference_mode == "process" and status.backend_status is not None
    finally:
        r.ctrl.close()
        r.world.close()
    assert r.ctrl.backend.pid is None  # the child is gone with the controller
