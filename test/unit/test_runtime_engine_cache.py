"""Engine cache: key fields, hits, and stale / corrupt entries rebuilt (on files, no TensorRT)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from diffusion_controller.runtime.engine_cache import EngineCache, EngineKey, default_cache_dir


def _key(**kw) -> EngineKey:
    base = dict(
        onnx_sha256="ab" * 32,
        precision="fp16",
        shapes={"x_init": ((1, 16, 7), (4, 16, 7), (8, 16, 7))},
        trt_version="10.3.0",
        gpu_name="Orin",
        compute_capability="8.7",
    )
    return EngineKey(**(base | kw))


class Builder:
    def __init__(self, payload: bytes = b"engine-bytes" * 100) -> None:
        self.calls = 0
        self.payload = payload

    def __call__(self) -> bytes:
        self.calls += 1
        return self.payload


def test_every_key_field_changes_the_digest() -> None:
    k = _key()
    variants = [
        replace(k, onnx_sha256="cd" * 32),
        replace(k, precision="fp32"),
        replace(k, shapes={"x_init": ((1, 16, 7), (1, 16, 7), (8, 16, 7))}),
        replace(k, trt_version="10.4.0"),
        replace(k, gpu_name="H100"),
        replace(k, compute_capability="9.0"),
        replace(k, extra={"workspace": 1}),
    ]
    digests = {k.digest()} | {v.digest() for v in variants}
    assert len(digests) == len(variants) + 1
    assert _key().digest() == k.digest()  # deterministic


def test_bad_key_is_rejected() -> None:
    with pytest.raises(ValueError, match="precision"):
        _key(precision="int8")
    with pytest.raises(ValueError, match="onnx_sha256"):
        _key(onnx_sha256="")


def test_miss_builds_then_hits(tmp_path: Path) -> None:
    cache, build = EngineCache(tmp_path / "c"), Builder()
    data, built = cache.get_or_build(_key(), build)
    assert built and data == build.payload and build.calls == 1
    data2, built2 = EngineCache(tmp_path / "c").get_or_build(_key(), build)
    assert not built2 and data2 == build.payload and build.calls == 1
    entries = EngineCache(tmp_path / "c").entries()
    assert len(entries) == 1 and entries[0]["key"]["gpu_name"] == "Orin"
    assert entries[0]["info"]["build_s"] >= 0


def test_other_gpu_or_version_does_not_reuse_the_engine(tmp_path: Path) -> None:
    cache, build = EngineCache(tmp_path), Builder()
    cache.get_or_build(_key(), build)
    cache.get_or_build(_key(gpu_name="H100"), build)
    cache.get_or_build(_key(trt_version="10.4.0"), build)
    assert build.calls == 3


def _corrupt_flip(engine: Path, meta: Path) -> None:
    raw = bytearray(engine.read_bytes())
    raw[5] ^= 0xFF
    engine.write_bytes(bytes(raw))


def _corrupt_truncate(engine: Path, meta: Path) -> None:
    engine.write_bytes(engine.read_bytes()[:10])


def _corrupt_meta_json(engine: Path, meta: Path) -> None:
    meta.write_text("{not json")


def _stale_meta(engine: Path, meta: Path) -> None:
    m = json.loads(meta.read_text())
    m["key"]["trt_version"] = "8.6.1"
    meta.write_text(json.dumps(m))


def _missing_meta(engine: Path, meta: Path) -> None:
    meta.unlink()


def _missing_engine(engine: Path, meta: Path) -> None:
    engine.unlink()


@pytest.mark.parametrize(
    "damage",
    [_corrupt_flip, _corrupt_truncate, _corrupt_meta_json, _stale_meta, _missing_meta,
     _missing_engine],
)
def test_damaged_entry_is_discarded_and_rebuilt(tmp_path: Path, damage) -> None:
    cache, build = EngineCache(tmp_path), Builder()
    cache.get_or_build(_key(), build)
    damage(*cache.paths(_key()))
    valid, reason = cache.check(_key())
    assert not valid and reason != "ok"
    data, built = cache.get_or_build(_key(), build)
    assert built and build.calls == 2 and data == build.payload
    assert cache.check(_key()) == (True, "ok")
    assert cache.stats.rebuilt_corrupt == 1


def test_empty_build_is_an_error_and_nothing_is_cached(tmp_path: Path) -> None:
    cache = EngineCache(tmp_path)
    with pytest.raises(RuntimeError, match="no data"):
        cache.get_or_build(_key(), Builder(b""))
    assert cache.check(_key()) == (False, "missing")


def test_no_temporary_files_left_and_clear(tmp_path: Path) -> None:
    cache = EngineCache(tmp_path)
    cache.get_or_build(_key(), Builder())
    cache.get_or_build(_key(precision="fp32"), Builder())
    assert sorted(p.suffix for p in tmp_path.iterdir()) == [".engine", ".engine", ".json", ".json"]
    assert cache.clear() == 4 and not list(tmp_path.iterdir())


def test_default_dir_honours_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("DIFFUSION_CONTROLLER_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / "diffusion_controller" / "engines"
    monkeypatch.setenv("DIFFUSION_CONTROLLER_CACHE", str(tmp_path / "x"))
    assert default_cache_dir() == tmp_path / "x" / "engines"
