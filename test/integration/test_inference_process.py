"""The inference process (runtime.inference_process.ProcessBackend) with a real child interpreter,
a real model and real failures: parity with the in-process backend, a killed child, a stalled one
(the fault-file test hook), a backend that raises, a corrupt artifact, and a clean close."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch builds the test model")

from diffusion_controller.runtime import fault_hooks  # noqa: E402
from diffusion_controller.runtime.inference_process import (  # noqa: E402
    InferenceCrashed,
    InferenceFailed,
    InferenceTimeout,
    InferenceUnavailable,
    ProcessBackend,
)

JOINTS = [f"panda_joint{i}" for i in range(1, 8)]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    from diffusion_controller.runtime.random_model import make_random_artifact

    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("proc_model")
    from diffusion_controller.policy.config import EncoderConfig, UNetConfig

    return make_random_artifact(
        out, image_size=(32, 32), horizon=16,
        encoder=EncoderConfig(variant="small", width=8, group_size=8, num_keypoints=8,
                              feature_dim=16),
        unet=UNetConfig(down_dims=[32, 64], kernel_size=3, n_groups=8, step_embed_dim=32))


@pytest.fixture
def fault_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "faults.json"
    monkeypatch.setenv(fault_hooks.ENV, str(path))  # inherited by the child
    return path


def _obs(backend: ProcessBackend, seed: int = 1):
    return backend_random_obs(backend, np.random.default_rng(seed))


def backend_random_obs(backend: ProcessBackend, rng: np.random.Generator):
    from diffusion_controller.runtime.backend import Observation

    cfg = backend.config
    h, w = cfg.image_size
    images = {c: rng.integers(0, 256, (cfg.n_obs_steps, h, w, 3), dtype=np.uint8)
              for c in cfg.cameras}
    joints = backend.normalizers["joints"].unnormalize(
        rng.uniform(-0.5, 0.5, (cfg.n_obs_steps, len(cfg.joint_names))))
    return Observation(images=images, joints=joints, stamp=12.5)


def test_parity_restart_after_kill_and_close(model_dir: str, fault_file: Path) -> None:
    from diffusion_controller.runtime.loading import load_backend

    proc = ProcessBackend(model_dir, backend="torch", threads=1, timeout=20.0, warmup_runs=0)
    local = load_backend(model_dir, backend="torch", threads=1)
    try:
        proc.start()
        pid = proc.pid
        assert pid is not None and proc.child_backend == "torch"
        obs = _obs(proc)
        warm = np.tile(obs.joints[-1], (16, 1))
        got = proc.infer(obs, steps=4, seed=3, warm_start=warm, prefix=warm[:2])
        want = local.infer(obs, steps=4, seed=3, warm_start=warm, prefix=warm[:2])
        assert got.actions.shape == (16, 7) and got.stamp == obs.stamp
        np.testing.assert_allclose(got.actions, want.actions, atol=1e-5)

        # A child killed while idle: the next call notices and starts a new one.
        proc.kill_child()
        time.sleep(0.2)
        again = proc.infer(obs, steps=4, seed=3)
        assert proc.pid not in (None, pid) and proc.starts == 2
        assert np.all(np.isfinite(again.actions))

        # A child dying inside a request: that call fails; after a short back-off a new child.
        shm_path = proc._shm.path  # checking the clean-up
        fault_file.write_text(json.dumps({"exit": True}))
        with pytest.raises(InferenceCrashed):
            proc.infer(obs, steps=4, seed=3)
        assert proc.crashes == 1 and "died" in proc.last_error and proc.pid is None
        fault_file.write_text("{}")
        deadline = time.monotonic() + 30.0
        while True:
            try:
                proc.infer(obs, steps=4, seed=3)
                break
            except InferenceUnavailable:  # within the back-off
                assert time.monotonic() < deadline, proc.last_error
                time.sleep(0.1)
        assert proc.starts == 3
    finally:
        proc.close()
    assert proc.pid is None
    assert shm_path is None or not os.path.exists(shm_path)


def test_stall_is_killed_and_raise_keeps_process(model_dir: str, fault_file: Path) -> None:
    proc = ProcessBackend(model_dir, backend="torch", threads=1, timeout=0.5, warmup_runs=0)
    try:
        proc.start()
        obs = _obs(proc)
        proc.timeout = 20.0  # the first call may be slow on a loaded machine
        proc.infer(obs, steps=2, seed=0)
        proc.timeout = 0.5
        pid = proc.pid
        shm = proc._shm.path  # checking the clean-up
        fault_file.write_text(json.dumps({"raise": "no convergence"}))
        with pytest.raises(InferenceFailed, match="injected fault: no convergence"):
            proc.infer(obs, steps=2, seed=0)
        assert proc.pid == pid, "a raising backend keeps its process"

        # A 60 s stall against a 0.5 s timeout: released long before the stall would end (a
        # deadline that tells the two apart on any machine; the release latency is not timed).
        fault_file.write_text(json.dumps({"delay_s": 60.0}))
        t0 = time.monotonic()
        with pytest.raises(InferenceTimeout):
            proc.infer(obs, steps=2, seed=0)
        assert time.monotonic() - t0 < 30.0, "the caller is released at the timeout, not the end"
        assert proc.timeouts == 1 and proc.pid is None and not os.path.exists(shm)
        fault_file.write_text("{}")
        proc.timeout = 20.0
        res = proc.infer(obs, steps=2, seed=0)  # restarted on demand
        assert np.all(np.isfinite(res.actions)) and proc.starts == 2
    finally:
        proc.close()


def test_corrupt_weights_fail_start_with_reason(model_dir: str, tmp_path: Path) -> None:
    import shutil

    bad = tmp_path / "bad_model"
    shutil.copytree(model_dir, bad)
    weights = bad / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-8:] = b"\x00" * 8
    weights.write_bytes(bytes(data))
    proc = ProcessBackend(str(bad), backend="torch", threads=1, warmup_runs=0)
    with pytest.raises(InferenceUnavailable, match="ArtifactError"):
        proc.start()
    assert proc.pid is None
    proc.close()


def test_child_runs_as_an_ordinary_process(model_dir: str) -> None:
    """Started from a real-time thread (as restarts are, from the worker), the child drops to
    SCHED_OTHER: the network never competes at the node's real-time priority."""
    import threading

    from diffusion_controller.reliability import rt

    proc = ProcessBackend(model_dir, backend="torch", threads=1, warmup_runs=0)
    out: dict[str, object] = {}

    def start() -> None:
        out["err"] = rt.set_fifo(0, 5)
        try:
            proc.start()
        except Exception as exc:  # reported below
            out["start"] = exc

    t = threading.Thread(target=start)
    t.start()
    t.join()
    try:
        if out["err"] is not None:
            pytest.skip(f"SCHED_FIFO not permitted here: {out['err']}")
        assert "start" not in out, out.get("start")
        assert rt.policy_of(proc.pid) == "other"
    finally:
        proc.close()


def test_child_warms_up_at_the_configured_samples_and_reports_it(model_dir: str) -> None:
    """The child warms up with warmup_samples chunks a call, and its first-inference time and
    sample limit reach the parent's status (what /diagnostics shows)."""
    proc = ProcessBackend(model_dir, backend="torch", threads=1, timeout=20.0, warmup_runs=1,
                          warmup_steps=2, warmup_samples=4)
    try:
        proc.start()
        status = proc.status()
        assert status["first_inference_ms"] > 0.0
        assert proc.max_samples == status["max_samples"] >= 32
        with pytest.raises(ValueError, match=r"num_samples must be an integer in 1\.\.64, got 0"):
            proc.check_num_samples(0)
        assert proc.check_num_samples(4) == 4
    finally:
        proc.close()
