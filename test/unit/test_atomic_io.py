"""Atomic writes give files the user's umask (not mkstemp's 0600) and never leave partial files."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from diffusion_controller.atomic_io import atomic_write_bytes, current_umask


@pytest.fixture
def umask():
    """Set a umask for the test and restore the caller's afterwards."""
    old = os.umask(0o022)
    yield lambda m: os.umask(m)
    os.umask(old)


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_mode_follows_umask(tmp_path: Path, umask, mask: int, mode: int) -> None:
    umask(mask)
    assert current_umask() == mask
    target = tmp_path / "weights.bin"
    atomic_write_bytes(target, b"abc", fsync=True)
    assert target.read_bytes() == b"abc"
    assert stat.S_IMODE(target.stat().st_mode) == mode


def test_replaces_whole_and_leaves_no_temp(tmp_path: Path, umask) -> None:
    target = tmp_path / "m.json"
    atomic_write_bytes(target, b"old")
    atomic_write_bytes(target, b"new contents")
    assert target.read_bytes() == b"new contents"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json"]


def test_failed_write_keeps_old_file(tmp_path: Path, umask) -> None:
    target = tmp_path / "m.bin"
    atomic_write_bytes(target, b"old")
    with pytest.raises(TypeError):
        atomic_write_bytes(target, "not bytes")  # type: ignore[arg-type]
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.bin"]


def test_engine_cache_files_get_umask(tmp_path: Path, umask) -> None:
    """The engine cache wrote through mkstemp directly (0600); its engine and metadata now 0644."""
    from diffusion_controller.runtime.engine_cache import EngineCache, EngineKey

    umask(0o022)
    key = EngineKey(onnx_sha256="ab" * 32, precision="fp16",
                    shapes={"x_init": ((1, 16, 7), (4, 16, 7), (32, 16, 7))},
                    trt_version="10.3.0", gpu_name="Orin", compute_capability="8.7")
    engine = EngineCache(tmp_path / "cache").put(key, b"engine bytes")
    files = [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]
    assert engine in files and len(files) == 2
    assert {stat.S_IMODE(p.stat().st_mode) for p in files} == {0o644}
