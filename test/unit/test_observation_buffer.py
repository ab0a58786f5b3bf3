"""ObservationBuffer: frame selection, joint interpolation, rejections, ages, thread safety."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from diffusion_controller.runtime.observation_buffer import ObservationBuffer

J = 3
SIZE = (4, 5)


def _img(value: int) -> np.ndarray:
    return np.full((*SIZE, 3), value, dtype=np.uint8)


def _buffer(**kw) -> ObservationBuffer:
    return ObservationBuffer([f"j{i}" for i in range(J)], ["cam"], SIZE, **kw)


def test_none_until_both_streams_exist() -> None:
    buf = _buffer()
    assert buf.observation(2, 0.1) is None
    buf.add_image("cam", 1.0, _img(1))
    assert buf.observation(2, 0.1) is None
    buf.add_joints(1.0, np.zeros(J))
    obs = buf.observation(2, 0.1)
    assert obs is not None
    assert obs.stamp == 1.0
    # Short history: the only frame is repeated.
    assert obs.images["cam"].shape == (2, *SIZE, 3)
    assert obs.joints.shape == (2, J)


def test_frames_spaced_dt_and_joints_interpolated() -> None:
    buf = _buffer()
    for k in range(101):  # joints at 100 Hz: q = t on every joint
        t = 10.0 + 0.01 * k
        buf.add_joints(t, np.full(J, t))
    for k in range(31):  # camera at 30 Hz
        t = 10.0 + k / 30.0
        buf.add_image("cam", t, _img(k))
    obs = buf.observation(3, 0.1)
    assert obs is not None
    assert obs.stamp == pytest.approx(11.0)
    # Targets 10.8, 10.9, 11.0 -> newest frames at or before: k = 24, 27, 30.
    values = [int(f[0, 0, 0]) for f in obs.images["cam"]]
    assert values == [24, 27, 30]
    stamps = np.array([10.0 + k / 30.0 for k in values])
    np.testing.assert_allclose(obs.joints, np.repeat(stamps[:, None], J, axis=1), atol=1e-9)


def test_out_of_order_and_bad_inputs_rejected() -> None:
    buf = _buffer()
    assert buf.add_joints(1.0, np.zeros(J)) is None
    assert "not after" in buf.add_joints(1.0, np.zeros(J))
    assert "not after" in buf.add_joints(0.5, np.zeros(J))
    assert "NaN" in buf.add_joints(2.0, np.array([0.0, np.nan, 0.0]))
    assert "values for 3 joints" in buf.add_joints(2.0, np.zeros(4))
    assert buf.add_image("cam", 1.0, _img(0)) is None
    assert "not after" in buf.add_image("cam", 0.9, _img(0))
    assert "unknown camera" in buf.add_image("other", 2.0, _img(0))
    assert "must be uint8" in buf.add_image("cam", 2.0, np.zeros((4, 5, 3), np.float32))
    assert "must be uint8" in buf.add_image("cam", 2.0, np.zeros((8, 8, 3), np.uint8))
    assert buf.rejected == 8
    assert buf.newest_joint_stamp() == 1.0


def test_joint_lag_gives_no_observation() -> None:
    buf = _buffer(max_joint_gap=0.05)
    buf.add_joints(1.0, np.zeros(J))
    buf.add_image("cam", 1.2, _img(0))  # 0.2 s newer than any joint state
    assert buf.observation(2, 0.1) is None
    buf.add_joints(1.19, np.ones(J))
    obs = buf.observation(2, 0.1)
    assert obs is not None
    np.testing.assert_allclose(obs.joints[-1], np.ones(J))  # held within the gap


def test_multi_camera_and_ages() -> None:
    buf = ObservationBuffer(["a", "b"], ["front", "wrist"], SIZE)
    buf.add_joints(5.0, np.zeros(2))
    buf.add_image("front", 5.0, _img(1))
    assert buf.observation(1, 0.1) is None  # wrist missing
    assert buf.newest_image_stamp() is None
    buf.add_image("wrist", 4.98, _img(2))
    obs = buf.observation(1, 0.1)
    assert obs is not None and set(obs.images) == {"front", "wrist"}
    ages = buf.ages(5.5)
    assert ages == pytest.approx({"joint_states": 0.5, "front": 0.5, "wrist": 0.52})
    assert buf.newest_image_stamp() == pytest.approx(4.98)
    buf.clear()
    assert buf.ages(6.0)["joint_states"] == float("inf")


def test_ring_wraps_and_threads() -> None:
    buf = _buffer(joint_capacity=16, image_capacity=4)
    errors: list[str] = []

    def joints() -> None:
        for k in range(2000):
            if (r := buf.add_joints(1.0 + k * 1e-3, np.full(J, float(k)))) is not None:
                errors.append(r)

    def images() -> None:
        for k in range(200):
            if (r := buf.add_image("cam", 1.0 + k * 1e-2, _img(k % 255))) is not None:
                errors.append(r)

    threads = [threading.Thread(target=joints), threading.Thread(target=images)]
    for t in threads:
        t.start()
    seen = 0
    while any(t.is_alive() for t in threads):
        obs = buf.observation(2, 0.02)
        if obs is not None:
            assert np.all(np.isfinite(obs.joints))
            seen += 1
    for t in threads:
        t.join()
    assert errors == []
    assert buf.newest_joint_stamp() == pytest.approx(1.0 + 1999e-3)
    obs = buf.observation(2, 0.01)
    assert obs is not None
    assert [int(f[0, 0, 0]) for f in obs.images["cam"]] == [198, 199]
