"""Export round trip from a saved artifact, and what happens to corrupt, stale or misplaced
exports: a clear error when nothing can be done, a fresh export when torch can make one."""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import numpy as np
import pytest
import torch

from diffusion_controller.cli import main as cli_main
from diffusion_controller.policy.artifact import ArtifactError
from diffusion_controller.runtime.loading import load_backend
from diffusion_controller.runtime.onnx_export import ExportError, check_export, export_onnx
from diffusion_controller.runtime.ort_backend import OrtBackend
from diffusion_controller.runtime.random_model import make_random_artifact

torch.set_num_threads(1)
TINY = dict(image_size=(16, 16), unet={"down_dims": [16, 32], "kernel_size": 3, "n_groups": 4,
                                       "step_embed_dim": 16})


@pytest.fixture()
def model(tmp_path: Path) -> Path:
    return Path(make_random_artifact(tmp_path / "model", seed=1, **TINY))


def _max_err(model_dir: Path, other) -> float:
    ref = load_backend(model_dir, "torch")
    obs = ref.random_observation(np.random.default_rng(0))
    return float(np.max(np.abs(ref.infer(obs, seed=0).actions - other.infer(obs, seed=0).actions)))


def test_cli_export_round_trip(model: Path, tmp_path: Path) -> None:
    out = tmp_path / "exported"
    rc = cli_main(["export", "--model", str(model), "--out", str(out), "--json",
                   str(tmp_path / "e.json")])
    assert rc == 0
    doc = json.loads((tmp_path / "e.json").read_text())
    assert doc["verify_max_abs_err_rad"] <= 1e-4
    assert sorted(p.name for p in out.iterdir()) == ["denoiser.onnx", "encoder.onnx",
                                                     "manifest.json"]
    check_export(model, out)
    # a backend opened on that directory, e.g. on a machine without torch
    from diffusion_controller.policy.artifact import load_config

    cfg, norms, meta = load_config(model)
    assert _max_err(model, OrtBackend(out, cfg, norms, meta, str(model))) <= 1e-4


def test_on_the_fly_export_then_reuse(model: Path) -> None:
    assert not (model / "onnx").exists()
    b = load_backend(model, "onnxruntime")
    manifest = json.loads((model / "onnx" / "manifest.json").read_text())
    mtime = (model / "onnx" / "denoiser.onnx").stat().st_mtime_ns
    load_backend(model, "onnxruntime")  # current export: reused, not rewritten
    assert (model / "onnx" / "denoiser.onnx").stat().st_mtime_ns == mtime
    assert manifest["weights_sha256"] == b.meta["weights"]["sha256"]
    assert load_backend(model, "auto").name == "onnxruntime"


def test_corrupt_onnx_is_reported_and_re_exported(model: Path, caplog) -> None:
    export_onnx(model)
    path = model / "onnx" / "denoiser.onnx"
    path.write_bytes(path.read_bytes()[:1000])  # truncated
    with pytest.raises(ExportError, match="corrupt denoiser"):
        check_export(model)
    with caplog.at_level("WARNING"):
        b = load_backend(model, "onnxruntime")
    assert "corrupt denoiser" in caplog.text
    check_export(model)
    assert _max_err(model, b) <= 1e-4


def test_garbage_with_matching_manifest_gets_a_clear_error_then_re_export(model: Path,
                                                                          caplog) -> None:
    """A file that matches its manifest but that onnxruntime cannot load (a broken exporter)."""
    export_onnx(model)
    path = model / "onnx" / "encoder.onnx"
    path.write_bytes(b"not an onnx file")
    mpath = model / "onnx" / "manifest.json"
    doc = json.loads(mpath.read_text())
    from diffusion_controller.runtime.engine_cache import sha256_file

    doc["files"]["encoder"]["sha256"] = sha256_file(path)
    mpath.write_text(json.dumps(doc))
    from diffusion_controller.policy.artifact import load_config

    cfg, norms, meta = load_config(model)
    with pytest.raises(ExportError, match="onnxruntime cannot load the encoder graph"):
        OrtBackend(model / "onnx", cfg, norms, meta, str(model))
    with caplog.at_level("WARNING"):
        b = load_backend(model, "onnxruntime")
    assert "re-exporting" in caplog.text
    assert _max_err(model, b) <= 1e-4


def test_stale_export_is_replaced(model: Path, tmp_path: Path) -> None:
    other = Path(make_random_artifact(tmp_path / "other", seed=2, **TINY))
    export_onnx(other)
    shutil.copytree(other / "onnx", model / "onnx")  # an export of different weights
    with pytest.raises(ExportError, match="stale"):
        check_export(model)
    b = load_backend(model, "onnxruntime")
    check_export(model)
    assert _max_err(model, b) <= 1e-4


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_read_only_model_dir_exports_into_the_cache(model: Path, tmp_path: Path) -> None:
    mode = model.stat().st_mode
    model.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        b = load_backend(model, "onnxruntime", cache_dir=tmp_path / "cache")
    finally:
        model.chmod(mode)
    assert not (model / "onnx").exists()
    assert list((tmp_path / "cache" / "onnx").iterdir())
    assert _max_err(model, b) <= 1e-4


def test_read_only_model_dir_as_root_uses_the_cache_when_told(model: Path, tmp_path: Path,
                                                             monkeypatch) -> None:
    """Same decision as above, made testable for root: the writability check says no."""
    import diffusion_controller.runtime.onnx_export as ox

    monkeypatch.setattr(ox, "writable_dir", lambda path: False)
    b = load_backend(model, "onnxruntime", cache_dir=tmp_path / "cache")
    assert not (model / "onnx").exists()
    assert _max_err(model, b) <= 1e-4


def test_tampered_weights_are_refused_even_with_a_good_export(model: Path) -> None:
    export_onnx(model)
    w = model / "model.safetensors"
    raw = bytearray(w.read_bytes())
    raw[-10] ^= 0xFF
    w.write_bytes(bytes(raw))
    with pytest.raises(ArtifactError, match="hash mismatch"):
        load_backend(model, "onnxruntime")


def test_export_command_reports_failures(tmp_path: Path, capsys) -> None:
    assert cli_main(["export", "--model", str(tmp_path / "nope")]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_bench_policy_smoke(model: Path, tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    rc = cli_main(["bench", "policy", "--model", str(model), "--runs", "3", "--warmup", "1",
                   "--steps", "4", "--backends", "torch,onnxruntime,nonsense", "--json",
                   str(out)])
    assert rc == 0
    doc = json.loads(out.read_text())
    rows = {r["backend"]: r for r in doc["rows"]}
    assert set(rows) == {"torch-eager-diffusers", "torch", "onnxruntime"}
    for r in rows.values():
        assert r["steps"] == 4 and 0 < r["p50_ms"] <= r["p99_ms"]
        assert r["max_abs_err"] <= 1e-4 and r["speedup_vs_eager"] > 0
    assert "nonsense" in doc["setup"]["errors"]


def test_runs_without_torch_or_onnx_installed(model: Path, tmp_path: Path) -> None:
    """A Jetson deployment: onnxruntime and the exported graphs, no torch, no onnx package."""
    import subprocess
    import sys

    export_onnx(model)
    bare = tmp_path / "bare"
    shutil.copytree(model, bare, ignore=shutil.ignore_patterns("onnx"))
    script = f"""
import sys
sys.modules["torch"] = None
sys.modules["onnx"] = None
import numpy as np
from diffusion_controller.runtime.loading import available_backends, load_backend
from diffusion_controller.runtime.onnx_export import ExportError
assert available_backends() == ["onnxruntime"], available_backends()
b = load_backend({str(model)!r}, "auto", cache_dir={str(tmp_path / "cache")!r})
r = b.infer(b.random_observation(np.random.default_rng(0)), seed=0)
np.save({str(tmp_path / "a.npy")!r}, r.actions)
try:
    load_backend({str(bare)!r}, "onnxruntime", cache_dir={str(tmp_path / "cache")!r})
except ExportError as exc:
    assert "torch is not installed" in str(exc), exc
else:
    raise AssertionError("no error without an export")
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    ref = load_backend(model, "torch")
    want = ref.infer(ref.random_observation(np.random.default_rng(0)), seed=0).actions
    assert np.max(np.abs(np.load(tmp_path / "a.npy") - want)) <= 1e-4
