"""The control loop streaming to the robot side's 1 kHz Humble controller, hand-ticked (ROS-free).

The rig is the trajectory path of the node without ROS: the real ControlLoop and SafetyFilter on
the Panda model, each command pushed into control/stream.TrajectoryStream as ros/command_output.py
does, each message queued on sim/robot_side.RobotSide (Humble's joint_trajectory_controller and
the FR3's checks of the 1 kHz commanded signal) a couple of milliseconds after its tick, and the
arm measured where its controller commands it, `lag` seconds behind (tracking). Time is a hand
clock the loop stamps with and the arm's controller runs on; a late or missed tick is the clock
moving on by more than a period, the arm running every 1 kHz cycle of the gap, and the ticker's
report coming after the tick, as control/ticker.run_ticker makes it.
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
        self.side = RobotSide("trajectory", ARM_JOINTS, HOME)
        self.lag = lag
        self.feed = True
        self.commands: list[Command] = []
        self.reflexes: list = []
        self._qs: list[tuple[float, np.ndarray]] = [(self.t, HOME.copy())]
        self.seq = 0

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

    def tick(self, late: int = 0, report: bool = True) -> Command | None:
        """One tick, `late` whole periods after its slot (the arm ran them meanwhile); the
        ticker's report of the skipped slots after it (`report`)."""
        t0 = self.t
        self.t = t0 + (1 + late) * P
        qs, reflexes = self.side.advance(t0, self.t)
        self.reflexes += reflexes
        self._qs += [(t0 + k * DT, q) for k, q in enumerate(qs)]
        self._qs = self._qs[-400:]
        if self.feed:
            self.loop.update_joint_state(self.measured(), np.zeros(J), self.t)
        cmd = self.loop.tick()
        if late and report:
            self.loop._note_missed(late)  # run_ticker reports the overrun after the tick
        return cmd

    def chunk(self, amplitude: float = 0.3) -> Chunk:
        """A smooth wave around HOME (0.5 Hz), observed 30 ms ago."""
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
    """Ticks that start 26-34 periods late while the arm moves fast (the ticker reports the
    skipped slots only after such a tick; the run's start-up hold leaves the arm's controller
    `lead` + bridge_hold periods behind the loop, so these are the gaps beyond that slack):
    the tick first commits the continuation the arm's controller ran over those slots, so its
    own command lands on its slot and its message continues the arm's splines: no reflex, no
    late command, no restart."""
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


def test_slots_the_ticker_counted_on_monotonic_time_alone_are_not_followed(robot) -> None:
    """The ticker reports skipped deadlines of monotonic time while the stamp clock (a lagging
    simulator's) advanced one period per tick: the loop follows the stamp clock, so the stream
    neither runs ahead of the arm's controller nor trips it."""
    rig = StreamRig(robot, tracking_error_limit=0.5)
    rig.loop.set_enabled(True)
    rig.run(40)
    lag = rig.stream.lateness  # the run's start-up hold: the arm runs this far behind
    for k in range(200):
        if k % 10 == 0:
            rig.loop.submit_chunk(rig.chunk())
        rig.tick()
        if k % 20 == 3:
            rig.loop._note_missed(8)
    rig.settle()
    assert not rig.reflexes, rig.reflexes[:1]
    assert rig.loop._followed == 0 and rig.stream.lateness == pytest.approx(lag, abs=1e-9)
