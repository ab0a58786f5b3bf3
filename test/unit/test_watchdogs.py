"""Watchdogs: one reason per fault, future stamps, tracking error, the allocation-free OK."""

from __future__ import annotations

import dataclasses

import core_settings
import numpy as np
import pytest

from diffusion_controller.control.watchdogs import OK, Watchdogs

NAMES = [f"panda_joint{i}" for i in range(1, 8)]
NOW = 100.0


def wd_config(**changes):
    """Watchdog deadlines from settings: the values these cases are written for, `changes` on
    top."""
    values = dict(joint_state_timeout=0.05, image_timeout=0.5, chunk_timeout=0.5,
                  tracking_error_limit=0.2, stamp_tolerance=0.02)
    values.update(changes)
    return core_settings.watchdogs(**values)


CONFIG = wd_config()


def healthy(**overrides):
    args = dict(now=NOW, joint_stamp=NOW - 0.01, image_stamp=NOW - 0.1, last_chunk_time=NOW - 0.2)
    args.update(overrides)
    return args


def test_all_fresh_is_ok_and_shared() -> None:
    wd = Watchdogs(CONFIG, NAMES)
    status = wd.evaluate(**healthy(), commanded_q=np.zeros(7), measured_q=np.full(7, 0.05))
    assert status.ok and status.reasons == () and status is OK


@pytest.mark.parametrize(
    "overrides, code, text",
    [
        ({"joint_stamp": NOW - 0.21}, "joint_states_stale", "stale joint_states (0.21 s old"),
        ({"joint_stamp": None}, "joint_states_missing", "no joint_states received"),
        ({"joint_stamp": float("nan")}, "joint_states_invalid", "invalid joint_states stamp"),
        ({"joint_stamp": NOW + 0.3}, "joint_states_future", "joint_states stamp 0.300 s in the"),
        ({"image_stamp": NOW - 0.8}, "image_stale", "stale image (0.80 s old"),
        ({"image_stamp": None}, "image_missing", "no image received"),
        ({"image_stamp": NOW + 1.0}, "image_future", "image stamp 1.000 s in the future"),
        ({"last_chunk_time": NOW - 0.62}, "chunk_stale", "no fresh chunk for 0.62 s"),
        ({"last_chunk_time": None}, "chunk_missing", "no chunk received"),
        ({"estop": True}, "estop", "e-stop latched"),
        ({"paused": True}, "paused", "paused"),
        ({"now": float("inf")}, "clock", "invalid clock reading"),
    ],
)
def test_each_fault_has_its_reason(overrides, code, text) -> None:
    status = Watchdogs(CONFIG, NAMES).evaluate(**healthy(**overrides))
    assert not status.ok
    assert status.codes == (code,)
    assert text in status.reasons[0]


def test_stamp_tolerance_allows_small_clock_skew() -> None:
    wd = Watchdogs(wd_config(stamp_tolerance=0.02))
    assert wd.evaluate(**healthy(joint_stamp=NOW + 0.015)).ok
    assert not wd.evaluate(**healthy(joint_stamp=NOW + 0.025)).ok


def test_tracking_error_names_the_joint() -> None:
    wd = Watchdogs(wd_config(tracking_error_limit=0.2), NAMES)
    measured = np.zeros(7)
    measured[3] = -0.31
    status = wd.evaluate(**healthy(), commanded_q=np.zeros(7), measured_q=measured)
    assert status.codes == ("tracking_error",)
    assert status.reasons[0] == "tracking error 0.310 rad on panda_joint4 (limit 0.2 rad)"
    status = wd.evaluate(**healthy(), commanded_q=np.zeros(7), measured_q=np.full(7, np.nan))
    assert status.codes == ("measured_nonfinite",)
    unnamed = Watchdogs(wd_config(tracking_error_limit=0.2))  # no names known: index in brackets
    status = unnamed.evaluate(**healthy(), commanded_q=np.zeros(7), measured_q=measured)
    assert status.reasons[0] == "tracking error 0.310 rad on joint [3] (limit 0.2 rad)"


def test_several_faults_are_all_listed() -> None:
    status = Watchdogs(CONFIG).evaluate(
        **healthy(joint_stamp=NOW - 1.0, image_stamp=None), estop=True, paused=True
    )
    assert status.codes == ("estop", "paused", "joint_states_stale", "image_missing")
    assert len(status.reasons) == 4


def test_disabled_checks_and_expect_chunk() -> None:
    wd = Watchdogs(dataclasses.replace(CONFIG, image_timeout=None, chunk_timeout=None,
                                        tracking_error_limit=None))
    assert wd.evaluate(
        **healthy(image_stamp=None, last_chunk_time=None),
        commanded_q=np.zeros(7),
        measured_q=np.ones(7),
    ).ok
    wd = Watchdogs(CONFIG)
    assert wd.evaluate(**healthy(last_chunk_time=None), expect_chunk=False).ok


@pytest.mark.parametrize(
    "kwargs",
    [
        {"joint_state_timeout": 0.0},
        {"joint_state_timeout": None},
        {"image_timeout": -1.0},
        {"chunk_timeout": float("nan")},
        {"tracking_error_limit": 0.0},
        {"stamp_tolerance": -0.1},
        {"stamp_tolerance": None},
        {"joint_state_timeout": 2.5},  # above the table's maximum
    ],
)
def test_config_validation(kwargs) -> None:
    """The ranges are the table's; only the core can switch a check off (None)."""
    with pytest.raises(ValueError):
        dataclasses.replace(CONFIG, **kwargs)
