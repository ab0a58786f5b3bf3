"""InferenceWorker with a real torch backend, the real ObservationBuffer and ChunkScheduler."""

from __future__ import annotations

import itertools
import json
import threading
import time

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch is needed for the reference backend")
torch.set_num_threads(1)

from core_settings import scheduler  # noqa: E402
from core_settings import worker as worker_settings  # noqa: E402

from diffusion_controller.control.chunk_scheduler import ChunkScheduler  # noqa: E402
from diffusion_controller.runtime import fault_hooks  # noqa: E402
from diffusion_controller.runtime.loading import load_backend  # noqa: E402
from diffusion_controller.runtime.observation_buffer import ObservationBuffer  # noqa: E402
from diffusion_controller.runtime.worker import InferenceWorker  # noqa: E402

JOINTS = [f"panda_joint{i}" for i in range(1, 8)]
HOME = np.array([0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785])


@pytest.fixture(scope="module")
def backend(tmp_path_factory, tiny_artifact):
    out = tiny_artifact(tmp_path_factory.mktemp("model"), HOME, 0.3, "tiny random test model")
    return load_backend(out, "torch", threads=1)


class Clock:
    def __init__(self, t: float = 100.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def _feed(buf: ObservationBuffer, t0: float, t1: float, rng: np.random.Generator) -> None:
    for t in np.arange(t0, t1, 0.01):
        buf.add_joints(float(t), HOME + 0.01 * np.sin(t))
    for t in np.arange(t0, t1, 1 / 30):
        buf.add_image("camera", float(t), rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))


def _setup(backend, **settings):
    clock = Clock()
    buf = ObservationBuffer(JOINTS, ["camera"], (32, 32))
    sched = ChunkScheduler(len(JOINTS), scheduler(latency_margin=0.0))
    submitted = []

    def submit(chunk):
        submitted.append(chunk)
        return sched.submit(chunk, clock())

    worker = InferenceWorker(backend, buf, submit, clock,
                             worker_settings(**settings), current_chunk=sched.current)
    return clock, buf, sched, worker, submitted


def test_step_outcomes_and_chunk_stamp(backend) -> None:
    clock, buf, sched, worker, submitted = _setup(backend, seed=1, image_timeout=0.5)
    rng = np.random.default_rng(0)
    assert worker.step_once() == "no observation"
    _feed(buf, 99.0, 100.0, rng)
    clock.t = 100.02
    assert worker.step_once() == "submitted"
    chunk = submitted[-1]
    assert chunk.t0 == pytest.approx(buf.newest_image_stamp())
    assert chunk.positions.shape == (16, 7) and np.all(np.isfinite(chunk.positions))
    assert chunk.dt == pytest.approx(0.1)
    assert sched.current() is not None
    assert worker.step_once() == "no new observation"
    clock.t = 101.0
    assert worker.step_once() == "stale observation"
    s = worker.stats()
    assert s.submitted == 1 and s.inferences == 1 and s.errors == 0
    assert s.skipped == {"no observation": 1, "no new observation": 1, "stale observation": 1}
    assert s.latency_p50_ms > 0 and np.isfinite(s.latency_p99_ms)
    assert set(s.last_timings_ms) >= {"encode", "denoise", "total"}


def test_prefix_comes_from_the_executing_chunk(backend) -> None:
    clock, buf, _, worker, submitted = _setup(backend, prefix_steps=3, seed=2)
    rng = np.random.default_rng(1)
    _feed(buf, 99.0, 100.0, rng)
    clock.t = 100.0
    assert worker.step_once() == "submitted"
    first = submitted[-1]
    _feed(buf, 100.0, 100.25, rng)
    clock.t = 100.26
    assert worker.step_once() == "submitted"
    second = submitted[-1]
    grid = second.t0 + 0.1 * np.arange(3)
    expect = np.stack([np.interp(grid, first.times(), first.positions[:, j]) for j in range(7)], 1)
    # The committed prefix comes back exactly (at least the first row is committed).
    np.testing.assert_allclose(second.positions[0], expect[0], atol=1e-9)
    assert second.seq == first.seq + 1


def test_backend_error_counted_and_no_chunk(backend, tmp_path, monkeypatch) -> None:
    clock, buf, _, worker, submitted = _setup(backend)
    _feed(buf, 99.0, 100.0, np.random.default_rng(2))
    clock.t = 100.0
    with pytest.raises(ValueError, match="ddim_steps"):  # the table's range, before any backend
        worker.update(ddim_steps=10_000)
    fault = tmp_path / "fault.json"  # the backend raises (the fault-injection hook)
    fault.write_text(json.dumps({"raise": "backend failure"}), encoding="utf-8")
    monkeypatch.setenv(fault_hooks.ENV, str(fault))
    assert worker.step_once() == "error"
    assert submitted == []
    s = worker.stats()
    assert s.errors == 1 and s.last_error and s.last_outcome == "error"
    with pytest.raises(ValueError, match="prefix_steps"):
        worker.update(prefix_steps=16)


@pytest.mark.parametrize("action", ["scale", "hold", "report"])
def test_uncertainty_actions(backend, action: str) -> None:
    holds: list[tuple[bool, str]] = []
    clock = Clock()
    buf = ObservationBuffer(JOINTS, ["camera"], (32, 32))
    submitted = []
    worker = InferenceWorker(
        backend, buf, lambda c: submitted.append(c), clock,
        worker_settings(num_samples=4, uncertainty_threshold=1e-4, uncertainty_action=action,
                       uncertainty_scale=0.5, seed=3),
        hold=lambda on, why: holds.append((on, why)),
    )
    _feed(buf, 99.0, 100.0, np.random.default_rng(3))
    clock.t = 100.0
    outcome = worker.step_once()
    s = worker.stats()
    assert s.last_spread is not None and s.last_spread > 1e-4
    assert s.uncertain
    if action == "hold":
        assert outcome == "held: uncertain" and submitted == []
        assert holds and holds[-1][0] and "uncertain" in holds[-1][1]
        # Confidence back (monitor off): released and the chunk goes out.
        worker.update(uncertainty_threshold=0.0)
        _feed(buf, 100.0, 100.1, np.random.default_rng(4))
        clock.t = 100.1
        assert worker.step_once() == "submitted"
        assert holds[-1] == (False, "")
    elif action == "scale":
        assert outcome == "submitted"
        assert submitted[-1].dt == pytest.approx(0.2)
    else:
        assert outcome == "submitted" and submitted[-1].dt == pytest.approx(0.1)
        assert holds == []


def test_thread_rate_and_stop(backend) -> None:
    clock_start = time.time()
    buf = ObservationBuffer(JOINTS, ["camera"], (32, 32))
    submitted = []
    worker = InferenceWorker(backend, buf, lambda c: submitted.append(c), time.time,
                             worker_settings(inference_rate_hz=10.0))
    stop = threading.Event()
    rng = np.random.default_rng(5)

    def sensors() -> None:
        k = 0
        while not stop.is_set():
            now = time.time()
            buf.add_joints(now, HOME)
            if k % 3 == 0:
                buf.add_image("camera", now, rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
            k += 1
            time.sleep(0.01)

    feeder = threading.Thread(target=sensors, daemon=True)
    feeder.start()
    worker.start()
    time.sleep(1.05)
    deadline = time.monotonic() + 30.0  # a starved host may need longer for its first two
    while len(submitted) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert worker.stop(timeout=2.0)  # the thread has ended
    stop.set()
    feeder.join()
    assert not worker.running
    elapsed = time.time() - clock_start
    s = worker.stats()
    # Periodic, and never faster than its rate (10 Hz) over a window that encloses the whole run
    # (so this thread's own stalls only widen it); an overloaded machine may skip some.
    assert 2 <= s.submitted <= int(elapsed * 10) + 2, s
    assert all(b.t0 > a.t0 for a, b in itertools.pairwise(submitted))


def test_a_seeded_chunk_depends_on_its_observation_alone(backend) -> None:
    """What eval relies on: once the seed is set, a chunk depends on its observation alone,
    whatever ran before (three unseeded inferences, or one under another seed)."""

    def run(before_seed: int, before_count: int) -> list[np.ndarray]:
        clock = Clock()
        buf = ObservationBuffer(JOINTS, ["camera"], (32, 32))
        out: list[np.ndarray] = []
        worker = InferenceWorker(backend, buf, lambda c: out.append(c.positions) or True, clock,
                                 worker_settings(seed=before_seed, warm_start=False,
                                                prefix_steps=0, image_timeout=5.0))
        rng = np.random.default_rng(before_count)
        _feed(buf, 99.0, 100.0, rng)
        for k in range(before_count):
            t = 100.0 + 0.1 * k
            buf.add_joints(t, HOME)
            buf.add_image("camera", t, rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
            clock.t = t + 0.01
            assert worker.step_once() == "submitted"
        out.clear()
        worker.update(seed=1234)
        same = np.random.default_rng(42)  # the episode: identical observations in both runs
        for k in range(12):
            t = 101.0 + k / 30
            buf.add_joints(t, HOME)
            buf.add_image("camera", t, same.integers(0, 256, (32, 32, 3), dtype=np.uint8))
            if k in (8, 11):
                clock.t = t + 0.01
                assert worker.step_once() == "submitted"
        return out

    a, b = run(-1, 3), run(77, 1)
    assert len(a) == len(b) == 2
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], a[1])  # other observations, other chunks


def test_a_seed_draws_new_noise_for_every_new_observation() -> None:
    """The same noise at every inference is one biased draw repeated (on pick_place it chose
    one bin for a whole run): under a fixed seed, noise is a function of seed and observation."""
    from diffusion_controller.runtime.backend import Observation
    from diffusion_controller.runtime.sampling_seed import observation_seed

    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    joints = np.tile(HOME, (2, 1))
    a = Observation({"camera": img}, joints, 1.0)
    same_later = Observation({"camera": img.copy()}, joints.copy(), 7.5)  # stamps do not count
    moved = Observation({"camera": img}, joints + 1e-6, 1.0)
    other_frame = Observation({"camera": img ^ 1}, joints, 1.0)
    assert observation_seed(5, a) == observation_seed(5, same_later)
    seeds = {observation_seed(5, o) for o in (a, moved, other_frame)} | {observation_seed(6, a)}
    assert len(seeds) == 4
    assert all(0 <= s < 2**31 for s in seeds)
