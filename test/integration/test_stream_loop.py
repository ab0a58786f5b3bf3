"""The control loop streaming to the robot side's 1 kHz Humble controller, hand-ticked (ROS-free).

The rig is the trajectory path of the node without ROS: the real ControlLoop and SafetyFilter on
the Panda model, each command pushed into control/stream.TrajectoryStream as ros/command_output.py
does, each message queued on sim/robot_side.RobotSide (Humble's joint_trajectory_controller and
the FR3's checks of the 1 kHz commanded signal) a couple of milliseconds after its tick, and the
arm measured where its controller commands it, `lag` seconds behind (tracking). Time is a hand
clock the loop stamps with and the arm's controller runs on; a late or missed tick is the clock
moving on by more than a period, the arm running every 1 kHz cycle of the gap, and the ticker's
report of the skipped slots coming before the tick, as control/ticker.run_ticker makes it.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from core_settings import UNIT_DEADLINES, UNIT_HANDOVER, UNIT_LIMITS, safety, scheduler, watchdogs

from diffusion_controller.control.chunk_scheduler import ChunkScheduler
from diffusion_controller.control.loop import RUNNING, ControlLoop
from diffusion_controller.control.stream import TrajectoryStream
from diffusion_controller.control.types import Chunk, Command
from diffusion_controller.control.watchdogs import Watchdogs
from diffusion_controller.sim.kinematics import ARM_JOINTS
from diffusion_controller.sim.robot_side import DT, RobotSide, TrajectoryPoint

pytest.importorskip("pybullet_data", reason="pybullet_data ships the Panda URDF")
from diffusion_controller.control.safety_filter import SafetyFilter

HOME = np.array([0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785])
P = 0.01
J = 7
LEAD = 0.1  # config/sim.yaml's trajectory_lead
TRANSPORT = 0.002  # s from a tick's start to its message's arrival at the arm's controller


class StreamRig:
    """Loop -> stream -> Humble's controller and the FR3's checks, on one hand clock."""

    def __init__(self, robot, lag: float = 0.0, **watchdog_overrides: float) -> None:
        self.t = 1000.0
        cfg = safety(**{**UNIT_LIMITS, "acceleration_scale": 0.25, "jerk_scale": 0.4},
                     control_rate_hz=1 / P)  # fmt: skip
        self.filter = SafetyFilter(robot, cfg)
        wd = dict(UNIT_DEADLINES, image_timeout=None, chunk_timeout=0.5)
        wd.update(watchdog_overrides)
        self.loop = ControlLoop(self.filter, ChunkScheduler(J, scheduler(**UNIT_HANDOVER)),
                                Watchdogs(watchdogs(**wd)), self._output, rate_hz=1 / P,
                                clock=lambda: self.t)  # fmt: skip
        self.loop.plan_steps = math.ceil(0.1 / P - 1e-9)  # trajectory_horizon 0.1 s
        self.loop.follow_on_miss = True
        self.stream = TrajectoryStream(P, LEAD)
        self.loop.arm_reference = self.stream  # as ros/controller_node.py wires it
        self.side = RobotSide("trajectory", ARM_JOINTS, HOME)
        self.lag = lag
        self.feed = True
        self.commands: list[Command] = []
        self.reflexes: list = []
        self._qs: list[tuple[float, np.ndarray]] = [(self.t, HOME.copy())]
        self.seq = 0
        self.amplitude = 0.3  # of the chunks' wave, rad

    def _output(self, cmd: Command) -> None:
        """ros/command_output.py's trajectory path, the message queued on the arm's side."""
        self.commands.append(cmd)
        self.stream.push(cmd)
        if cmd.plan is None:
            return  # a followed slot: history only
        points = self.stream.points()
        if not points:
            return  # a new run's bridge
        first = points[0].time
        pts = [TrajectoryPoint(p.time - first, p.positions, p.velocities, p.accelerations)
               for p in points]  # fmt: skip
        self.side.queue(pts, first, self.t + TRANSPORT)

    def measured(self) -> np.ndarray:
        """Where the arm is: its controller's command `lag` seconds ago."""
        when = self.t - self.lag
        for t, q in reversed(self._qs):
            if t <= when + 1e-9:
                return q
        return self._qs[0][1]

    def tick(self, late: int = 0) -> Command | None:
        """One tick, `late` whole periods after its slot (the arm ran them meanwhile), which the
        ticker reports before the tick (control/ticker.run_ticker)."""
        t0 = self.t
        self.t = t0 + (1 + late) * P
        qs, reflexes = self.side.advance(t0, self.t)
        self.reflexes += reflexes
        self._qs += [(t0 + k * DT, q) for k, q in enumerate(qs)]
        self._qs = self._qs[-400:]
        if self.feed:
            self.loop.update_joint_state(self.measured(), np.zeros(J), self.t)
        if late:
            self.loop._note_missed(late)
        return self.loop.tick()

    def chunk(self) -> Chunk:
        """A smooth wave around HOME (0.5 Hz, `amplitude`), observed 30 ms ago."""
        amplitude = self.amplitude
        self.seq += 1
        t0 = self.t - 0.03
        times = t0 + 0.1 * np.arange(16)
        wave = amplitude * np.sin(2 * np.pi * 0.5 * (times - 1000.0))[:, None]
        return Chunk(t0=t0, dt=0.1, positions=HOME + wave * np.ones(J), seq=self.seq)

    def run(self, ticks: int, late: dict[int, int] | None = None, every: int = 10) -> None:
        """`ticks` ticks with a fresh chunk every `every`; `late`: tick index -> periods late."""
        late = late or {}
        for k in range(ticks):
            if k % every == 0:
                self.loop.submit_chunk(self.chunk())
            self.tick(late.get(k, 0))

    def settle(self, seconds: float = 1.0) -> None:
        """The arm's controller runs on after the loop's last message."""
        _, reflexes = self.side.advance(self.t, self.t + seconds)
        self.reflexes += reflexes


def moving(rig: StreamRig) -> bool:
    return bool(np.abs(rig.commands[-1].velocities).max() > 0.2)


def test_a_tick_that_starts_late_follows_its_missed_slots_first(robot) -> None:
    """Ticks that start 26-34 periods late while the arm moves fast (the run's start-up hold
    leaves the arm's controller `lead` + bridge_hold periods behind the loop, so these are the
    gaps beyond that slack): the tick first commits the continuation the arm's controller ran
    over those slots, so its own command lands on its slot and its message continues the
    arm's splines: no reflex, no late command, no restart."""
    rig = StreamRig(robot, tracking_error_limit=0.5)
    rig.loop.set_enabled(True)
    rig.run(40)
    assert rig.loop.state == RUNNING and moving(rig)
    lates = 0
    for k in range(300):
        if k % 10 == 0:
            rig.loop.submit_chunk(rig.chunk())
        late = 26 + (k // 37) % 9 if k % 37 == 5 and moving(rig) else 0
        lates += late > 0
        rig.tick(late)
        assert not rig.reflexes, rig.reflexes[0]
    rig.settle()
    assert lates >= 4 and not rig.reflexes, rig.reflexes[:1]
    assert rig.stream.late == 0 and rig.stream.restarts == 0
    assert rig.loop.status().exceptions == 0


def _moving_fast(rig: StreamRig, speed: float = 0.6) -> None:
    """Start the rig and run until a joint is commanded faster than `speed` (rad/s)."""
    rig.loop.set_enabled(True)
    rig.run(40)
    for _ in range(300):
        if np.abs(rig.commands[-1].velocities).max() > speed:
            break
        rig.run(1, every=1)
    assert rig.loop.state == RUNNING and np.abs(rig.commands[-1].velocities).max() > speed


@pytest.mark.parametrize("from_stream", [True, False])
def test_reactivation_while_the_arms_controller_moves_continues_the_run(
    robot, from_stream: bool
) -> None:
    """Deactivated at 1.4 rad/s (the loop brakes to rest, publishes the hold, goes quiet) and
    activated again 30 ms later, while the arm's controller, `lead` and more behind, still
    runs the brake 7 cm short of the hold: the loop starts from the stream's own state, so the
    stream goes on with the same run, without a reflex. Seeded from the measurement instead
    (no stream to ask: the loop before it), the command jumps back to where the arm is, the
    stream starts a new run while the arm moves, and Humble's controller re-plans it from its
    own state: the reflex (about -590 rad/s^2 on joint 1)."""
    rig = StreamRig(robot, tracking_error_limit=0.5)
    rig.amplitude = 0.5
    if not from_stream:
        rig.loop.arm_reference = None
    _moving_fast(rig, 1.0)
    rig.loop.set_enabled(False)
    while rig.loop.state != "inactive":
        rig.tick()
    for _ in range(3):
        rig.tick()
    assert np.abs(rig.measured() - rig.commands[-1].positions).max() > 0.05  # beyond a transition
    rig.loop.set_enabled(True)
    rig.run(100)
    rig.settle()
    if from_stream:
        assert not rig.reflexes, rig.reflexes[:1]
        assert rig.stream.runs == 1 and rig.stream.transitions == 0
        assert rig.loop._reseeds == 1 and rig.loop.state == RUNNING
    else:
        assert rig.stream.runs == 2 and rig.side.controller.stalls >= 1
        assert rig.reflexes and rig.reflexes[0].quantity == "acceleration"


def test_a_fault_while_moving_resumes_from_the_stream_without_a_new_run(robot) -> None:
    """The joint states stop while the arm moves fast (the stale-input watchdog brakes the
    loop) and come back while the arm's controller still runs the brake, within the tracking
    tolerance of it: the loop resumes from the stream's own state at once (no wait for rest,
    no glide to a lagging measurement), in the same run, without a reflex."""
    rig = StreamRig(robot, lag=0.02, tracking_error_limit=0.5, joint_state_timeout=0.05)
    _moving_fast(rig)
    rig.feed = False
    states = set()
    for _ in range(8):
        rig.run(1, every=1)
        states.add(rig.loop.state)
    assert "braking" in states, states
    rig.feed = True
    resumed = None
    for k in range(150):
        if k % 10 == 0:
            rig.loop.submit_chunk(rig.chunk())
        rig.tick()
        if resumed is None and rig.loop.state == RUNNING:
            resumed = k
    rig.settle()
    assert not rig.reflexes, rig.reflexes[:1]
    assert resumed is not None and resumed < 5, resumed
    assert rig.stream.runs == 1 and rig.stream.transitions == 0 and rig.stream.restarts == 0
    assert rig.loop._reseeds >= 1


def test_an_estop_reset_resumes_from_the_stream_and_a_far_arm_from_its_measurement(
    robot,
) -> None:
    """E-stop while moving, reset once the loop holds: the arm is where the stream is, so
    the loop goes on from the stream's state (same run, no reflex). Then the arm is found
    0.6 rad away (pushed by hand while stopped, beyond the tracking tolerance): the loop
    falls back to the settled measurement, as before."""
    rig = StreamRig(robot, tracking_error_limit=0.5)
    _moving_fast(rig)
    rig.loop.estop()
    while rig.loop.state != "estopped" or np.abs(rig.commands[-1].velocities).max() > 0:
        rig.tick()
    assert rig.loop.reset()[0]
    rig.run(60)
    rig.settle()
    assert not rig.reflexes, rig.reflexes[:1]
    assert rig.loop._reseeds == 1 and rig.loop.state == RUNNING
    assert rig.stream.runs == 1 and rig.stream.transitions == 0
    # far: the e-stop again, the arm measured 0.6 rad off on one joint
    rig.loop.estop()
    while rig.loop.state != "estopped" or np.abs(rig.commands[-1].velocities).max() > 0:
        rig.tick()
    rig.settle(0.5)
    held = rig.commands[-1].positions
    pushed = held + np.eye(J)[3] * 0.6
    rig.measured = lambda: pushed  # type: ignore[method-assign]
    assert rig.loop.reset()[0]
    for _ in range(10):
        rig.tick()
    assert rig.loop._reseeds == 1  # not from the stream
    np.testing.assert_allclose(rig.loop._filter_state()[0], pushed, atol=1e-9)
