"""ChunkScheduler: latency drop, rejections, C2 hand-over within the jerk limit, exhaustion."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from core_settings import scheduler as sched_config

from diffusion_controller.control.chunk_scheduler import EXHAUSTED, ChunkScheduler
from diffusion_controller.control.types import Chunk

J = 7
DT_LOOP = 0.01


def wave(
    t0: float,
    horizon: int = 16,
    dt: float = 0.1,
    offset: float = 0.0,
    seq: int = 0,
    freq: float = 0.5,
) -> Chunk:
    """A smooth chunk: each joint a slow sinusoid (the kind of motion a policy produces)."""
    times = t0 + dt * np.arange(horizon)
    phase = np.arange(J)[None, :] * 0.3
    pos = 0.3 * np.sin(2 * np.pi * freq * times[:, None] + phase) + offset
    return Chunk(t0=t0, dt=dt, positions=pos, seq=seq)


def run(sched: ChunkScheduler, t_from: float, t_to: float):
    ts = np.arange(t_from, t_to, DT_LOOP)
    refs = [sched.reference(float(t)) for t in ts]
    return ts, refs


def assert_c2_at_ticks(refs, jerk_limit: float) -> None:
    """Tick-level C2 check: the (q, v, a) sequence is consistent with a jerk-bounded integrator."""
    q = np.array([r.q for r in refs])
    v = np.array([r.v for r in refs])
    a = np.array([r.a for r in refs])
    da = np.abs(np.diff(a, axis=0))
    assert da.max() <= jerk_limit * DT_LOOP * (1 + 1e-6)
    j = jerk_limit
    # v and q consistent with integrating a bounded-jerk acceleration over one tick
    dv_err = np.abs(np.diff(v, axis=0) - 0.5 * (a[1:] + a[:-1]) * DT_LOOP)
    assert dv_err.max() <= j * DT_LOOP**2 / 4 + 1e-9
    dq_err = np.abs(np.diff(q, axis=0) - v[:-1] * DT_LOOP - (2 * a[:-1] + a[1:]) * DT_LOOP**2 / 6)
    assert dq_err.max() <= j * DT_LOOP**3 / 6 + 1e-9


def test_first_chunk_drops_past_actions_and_tracks_the_rest() -> None:
    sched = ChunkScheduler(J, sched_config())
    chunk = wave(10.0, seq=1)
    now = 10.25  # 3 actions (10.0, 10.1, 10.2) are in the past; 10.26 is within the margin
    res = sched.submit(chunk, now)
    assert res.accepted, res.reason
    assert res.dropped_actions == 3
    assert sched.current() is chunk
    # after the blend window the reference passes through the chunk's actions
    for k in range(6, 16):
        ref = sched.reference(10.0 + 0.1 * k)
        np.testing.assert_allclose(ref.q, chunk.positions[k], atol=1e-9)
        assert ref.seq == 1 and not ref.exhausted


def test_latency_margin_counts_as_past() -> None:
    sched = ChunkScheduler(J, sched_config(latency_margin=0.06))
    res = sched.submit(wave(0.0, seq=1), 0.05)  # 0.0 and 0.1 are both <= 0.11
    assert res.accepted and res.dropped_actions == 2


@pytest.mark.parametrize(
    "chunk, needle",
    [
        (Chunk(0.0, 0.1, np.zeros((16, 6)), 1), "wrong width"),
        (Chunk(0.0, 0.1, np.full((16, J), np.nan), 1), "non-finite"),
        (Chunk(0.0, 0.1, np.where(np.eye(16, J) > 0, np.inf, 0.0), 1), "non-finite"),
        (Chunk(float("nan"), 0.1, np.zeros((16, J)), 1), "non-finite"),
        (Chunk(0.0, 0.0, np.zeros((16, J)), 1), "dt must be > 0"),
        (Chunk(0.0, -0.1, np.zeros((16, J)), 1), "dt must be > 0"),
        (Chunk(0.0, 0.1, np.zeros((0, J)), 1), "empty"),
        (Chunk(0.0, 0.1, np.zeros(J), 1), "2-D"),
        (Chunk(0.0, 0.1, [[0.0] * J] * 4, 1), "2-D"),
    ],
)
def test_malformed_chunks_are_rejected_with_reason(chunk: Chunk, needle: str) -> None:
    sched = ChunkScheduler(J, sched_config())
    res = sched.submit(chunk, 0.05)
    assert not res.accepted
    assert needle in res.reason
    assert sched.current() is None and sched.reference(0.05) is None


def test_time_based_rejections() -> None:
    sched = ChunkScheduler(J, sched_config(chunk_timeout=0.5))
    res = sched.submit(wave(0.0, horizon=4, seq=1), 10.0)
    assert not res.accepted and "stale" in res.reason
    res = sched.submit(wave(9.0, horizon=4, seq=1), 9.45)  # not stale, but 9.0..9.3 all past
    assert not res.accepted and res.reason == "chunk wholly in the past"
    assert res.dropped_actions == 4
    res = sched.submit(wave(9.0, horizon=5, seq=1), 9.31)  # one action left (9.4)
    assert not res.accepted and "only 1 action" in res.reason
    res = sched.submit(wave(11.0, seq=1), 10.0)
    assert not res.accepted and "future" in res.reason


def test_out_of_order_chunks_are_rejected_and_do_not_change_the_reference() -> None:
    sched = ChunkScheduler(J, sched_config())
    assert sched.submit(wave(1.0, seq=5), 1.05).accepted
    before = sched.reference(1.3)
    res = sched.submit(wave(1.1, seq=5), 1.15)
    assert not res.accepted and "seq 5 <= current 5" in res.reason
    res = sched.submit(wave(0.9, seq=6), 1.15)
    assert not res.accepted and "older than current" in res.reason
    after = sched.reference(1.3)
    np.testing.assert_array_equal(before.q, after.q)
    assert sched.current().seq == 5


def test_hand_over_between_disagreeing_chunks_is_c2_within_jerk_limit() -> None:
    jerk = 400.0
    sched = ChunkScheduler(J, sched_config(jerk_limit=jerk, blend_time=0.2))
    assert sched.submit(wave(0.0, seq=1), 0.0).accepted
    _, refs1 = run(sched, 0.0, 0.35)
    # the second chunk disagrees: offset by 0.05 rad and at a different frequency
    new = wave(0.25, seq=2, offset=0.05, freq=0.7)
    res = sched.submit(new, 0.35)
    assert res.accepted, res.reason
    assert res.blend_s >= 0.2 and res.max_jerk <= jerk
    _, refs2 = run(sched, 0.35, 2.5)
    refs = refs1 + refs2
    assert_c2_at_ticks(refs, jerk)
    # it ends up on the new chunk's actions
    late = [k for k in range(new.horizon) if new.times()[k] >= 0.35 + res.blend_s]
    for k in late:
        np.testing.assert_allclose(
            sched.reference(float(new.times()[k])).q, new.positions[k], atol=1e-9
        )


def test_big_disagreement_stretches_the_blend_or_is_rejected() -> None:
    jerk = 100.0
    sched = ChunkScheduler(J, sched_config(jerk_limit=jerk))
    assert sched.submit(wave(0.0, seq=1), 0.0).accepted
    _, refs0 = run(sched, 0.0, 0.145)
    res = sched.submit(wave(0.1, seq=2, offset=0.3), 0.15)
    assert res.accepted and res.blend_s > 0.3 and res.max_jerk <= jerk
    _, refs = run(sched, 0.15, 2.0)
    assert_c2_at_ticks(refs0 + refs, jerk)
    # a 5 rad disagreement cannot be joined gently within a 0.3 s chunk: rejected, nothing changes
    before = sched.reference(0.5)
    res = sched.submit(wave(0.3, horizon=4, seq=3, offset=5.0), 0.35)
    assert not res.accepted and "jerk limit" in res.reason
    np.testing.assert_array_equal(sched.reference(0.5).q, before.q)
    assert sched.current().seq == 2


def test_exhaustion_decelerates_to_rest_and_reports() -> None:
    acc = 2.0
    jerk = 500.0
    sched = ChunkScheduler(J, sched_config(stop_acceleration=acc, jerk_limit=jerk))
    chunk = wave(0.0, horizon=8, seq=3, freq=0.8)
    assert sched.submit(chunk, 0.0).accepted
    ts, refs = run(sched, 0.0, 3.0)
    assert_c2_at_ticks(refs, jerk)
    live = [r for t, r in zip(ts, refs, strict=True) if t <= chunk.t_end]
    assert all(not r.exhausted and r.reason == "" for r in live)
    tail = [r for t, r in zip(ts, refs, strict=True) if t > chunk.t_end]
    assert all(r.exhausted and r.reason == EXHAUSTED and r.remaining < 0 for r in tail)
    speeds = np.array([np.abs(r.v).max() for r in tail])
    assert speeds[0] > 0.1  # it was moving when the data ran out ...
    assert np.all(np.diff(speeds) <= 1e-12)  # ... and slows monotonically ...
    assert tail[-1].stopped and speeds[-1] == 0.0  # ... to rest
    assert max(np.abs(r.a).max() for r in tail) <= acc / 2 + 1e-9


def test_new_chunk_after_exhaustion_starts_from_rest_smoothly() -> None:
    jerk = 500.0
    sched = ChunkScheduler(J, sched_config(jerk_limit=jerk))
    assert sched.submit(wave(0.0, horizon=5, seq=1), 0.0).accepted
    _, refs1 = run(sched, 0.0, 3.0)
    assert refs1[-1].stopped
    assert sched.submit(wave(2.95, seq=2), 3.0).accepted
    _, refs2 = run(sched, 3.0, 5.0)
    assert_c2_at_ticks(refs1 + refs2, jerk)


def test_rebase_joins_the_chunk_from_a_given_state() -> None:
    jerk = 500.0
    sched = ChunkScheduler(J, sched_config(jerk_limit=jerk))
    chunk = wave(0.0, seq=1)
    assert sched.submit(chunk, 0.0).accepted
    q = sched.reference(0.5).q + 0.02
    sched.rebase(0.5, q, np.zeros(J), np.zeros(J))
    ref = sched.reference(0.5)
    np.testing.assert_allclose(ref.q, q)
    np.testing.assert_allclose(ref.v, 0.0)
    _, refs = run(sched, 0.5, 2.0)
    assert_c2_at_ticks(refs, jerk)
    np.testing.assert_allclose(sched.reference(1.5).q, chunk.positions[15], atol=1e-9)


def test_rebase_without_chunk_holds_and_clear_forgets() -> None:
    sched = ChunkScheduler(J, sched_config())
    assert sched.reference(0.0) is None
    q = np.linspace(-0.5, 0.5, J)
    sched.rebase(0.0, q)
    ref = sched.reference(0.3)
    np.testing.assert_allclose(ref.q, q)
    assert ref.stopped and not ref.v.any()
    with pytest.raises(ValueError):
        sched.rebase(0.0, np.full(J, np.nan))
    sched.clear()
    assert sched.reference(0.3) is None and sched.current() is None


def test_sample_gives_future_reference_positions() -> None:
    sched = ChunkScheduler(J, sched_config())
    assert sample_none(sched)
    assert sched.submit(wave(0.0, seq=1), 0.0).accepted
    ts = 0.5 + DT_LOOP * np.arange(10)
    many = sched.sample(ts)
    for i, t in enumerate(ts):
        np.testing.assert_allclose(many[i], sched.reference(float(t)).q, atol=1e-12)


def sample_none(sched: ChunkScheduler) -> bool:
    return sched.sample(np.array([0.0])) is None


def test_config_validation() -> None:
    base = sched_config()
    with pytest.raises(ValueError, match="blend_time"):  # the table's range
        dataclasses.replace(base, blend_time=-0.1)
    with pytest.raises(ValueError):
        sched_config(jerk_limit=-1.0)
    with pytest.raises(ValueError):
        sched_config(min_remaining_actions=1)
    with pytest.raises(ValueError, match="not finite"):
        dataclasses.replace(base, latency_margin=float("nan"))
    with pytest.raises(ValueError):
        ChunkScheduler(J, sched_config(jerk_limit=[1.0, 2.0]))


def test_zero_blend_time_is_as_short_as_the_jerk_limit_allows() -> None:
    jerk = 2000.0
    sched = ChunkScheduler(J, sched_config(jerk_limit=jerk, blend_time=0.0))
    assert sched.submit(wave(0.0, seq=1), 0.0).accepted
    _, refs1 = run(sched, 0.0, 0.35)
    res = sched.submit(wave(0.3, seq=2, offset=0.01), 0.35)
    assert res.accepted and res.blend_s < 0.2 and res.max_jerk <= jerk
    _, refs2 = run(sched, 0.35, 1.5)
    assert_c2_at_ticks(refs1 + refs2, jerk)
