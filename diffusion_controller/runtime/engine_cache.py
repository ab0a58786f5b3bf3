"""On-disk cache of built TensorRT engines, keyed by everything that makes an engine valid.

A TensorRT engine is only valid for the ONNX graph, precision, shape profile, TensorRT version and
GPU it was built with; building one on a Jetson takes minutes. Each entry is two files:
`<key>.engine` (the serialized engine) and `<key>.json` (the key fields and the sha256 of the engine
bytes). A missing, truncated, altered or mismatching entry counts as a miss and is removed so it
gets rebuilt; writes go through a temporary file and an atomic rename so a crash never leaves a half
entry behind. Nothing here imports TensorRT, so the logic is tested on any machine.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from diffusion_controller.atomic_io import atomic_write_bytes

log = logging.getLogger(__name__)

CACHE_FORMAT = 1


def default_cache_dir() -> Path:
    """~/.cache/diffusion_controller/engines, or $DIFFUSION_CONTROLLER_CACHE/engines if set."""
    root = os.environ.get("DIFFUSION_CONTROLLER_CACHE")
    if root:
        return Path(root).expanduser() / "engines"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "diffusion_controller" / "engines"


def resolve_cache_dir(cache_dir: str | os.PathLike[str] | None) -> Path:
    """The engine cache directory: `cache_dir` if given, else default_cache_dir(). TensorRT
    engines live in it directly; onnxruntime's TensorRT-EP engines in `ort_trt/`, ONNX exports of
    read-only models in `onnx/<weights hash>/`."""
    return Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class EngineKey:
    """The fields an engine depends on. `shapes` maps input name -> (min, opt, max) shape."""

    onnx_sha256: str
    precision: str  # "fp32" | "fp16"
    shapes: Mapping[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]
    trt_version: str
    gpu_name: str
    compute_capability: str
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.precision not in ("fp32", "fp16"):
            raise ValueError(f"precision must be 'fp32' or 'fp16', got {self.precision!r}")
        if not self.onnx_sha256:
            raise ValueError("onnx_sha256 must not be empty")

    def fields(self) -> dict[str, Any]:
        """JSON-stable form (tuples become lists, names sorted)."""
        d = asdict(self)
        d["shapes"] = {
            name: [list(s) for s in self.shapes[name]] for name in sorted(self.shapes)
        }
        d["extra"] = {k: self.extra[k] for k in sorted(self.extra)}
        return d

    def digest(self) -> str:
        blob = json.dumps({"format": CACHE_FORMAT, **self.fields()}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:32]


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    rebuilt_corrupt: int = 0
    builds: int = 0


class EngineCache:
    """Directory of engines; `get_or_build(key, build)` is the one call backends need."""

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self.root = Path(root).expanduser() if root is not None else default_cache_dir()
        self.stats = CacheStats()

    def paths(self, key: EngineKey) -> tuple[Path, Path]:
        d = key.digest()
        return self.root / f"{d}.engine", self.root / f"{d}.json"

    def _discard(self, key: EngineKey, why: str) -> None:
        log.warning("engine cache: discarding entry %s (%s); it will be rebuilt", key.digest(), why)
        for p in self.paths(key):
            p.unlink(missing_ok=True)
        self.stats.rebuilt_corrupt += 1

    def check(self, key: EngineKey) -> tuple[bool, str]:
        """(valid, reason): whether a usable entry for `key` exists, and if not, why not."""
        engine_path, meta_path = self.paths(key)
        if not engine_path.exists() and not meta_path.exists():
            return False, "missing"
        if not engine_path.exists() or not meta_path.exists():
            return False, "incomplete entry"
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            return False, f"unreadable metadata: {exc}"
        if not isinstance(meta, dict) or meta.get("format") != CACHE_FORMAT:
            return False, "unknown metadata format"
        if meta.get("key") != key.fields():
            return False, "stale: key fields differ"
        if meta.get("size") != engine_path.stat().st_size:
            return False, "size mismatch (truncated?)"
        if meta.get("sha256") != sha256_file(engine_path):
            return False, "checksum mismatch"
        return True, "ok"

    def get(self, key: EngineKey) -> bytes | None:
        """The engine bytes if a valid entry exists; a present but invalid one is removed."""
        valid, reason = self.check(key)
        if not valid:
            if reason != "missing":
                self._discard(key, reason)
            self.stats.misses += 1
            return None
        engine_path, _ = self.paths(key)
        data = engine_path.read_bytes()
        # Re-verify what was actually read: the file could change between check and read.
        _, meta_path = self.paths(key)
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if hashlib.sha256(data).hexdigest() != meta.get("sha256"):
            self._discard(key, "checksum mismatch on read")
            self.stats.misses += 1
            return None
        self.stats.hits += 1
        return data

    def put(self, key: EngineKey, data: bytes, info: Mapping[str, Any] | None = None) -> Path:
        """Store `data` atomically: the engine first, then the metadata that validates it."""
        if not data:
            raise ValueError("refusing to cache an empty engine")
        self.root.mkdir(parents=True, exist_ok=True)
        engine_path, meta_path = self.paths(key)
        meta = {
            "format": CACHE_FORMAT,
            "key": key.fields(),
            "sha256": hashlib.sha256(data).hexdigest(),
            "size": len(data),
            "created": time.time(),
            "info": dict(info or {}),
        }
        atomic_write_bytes(engine_path, data, fsync=True)
        atomic_write_bytes(meta_path, json.dumps(meta, indent=2).encode(), fsync=True)
        return engine_path

    def get_or_build(
        self,
        key: EngineKey,
        build: Callable[[], bytes],
        info: Mapping[str, Any] | None = None,
    ) -> tuple[bytes, bool]:
        """(engine bytes, built): a valid cached engine, or a freshly built and stored one."""
        data = self.get(key)
        if data is not None:
            return data, False
        t = time.perf_counter()
        data = build()
        if not data:
            raise RuntimeError("engine build returned no data")
        self.stats.builds += 1
        meta = {"build_s": round(time.perf_counter() - t, 3), **dict(info or {})}
        self.put(key, data, meta)
        return data, True

    def entries(self) -> list[dict[str, Any]]:
        """Metadata of every entry in the cache (unreadable ones are skipped)."""
        out = []
        if not self.root.is_dir():
            return out
        for meta_path in sorted(self.root.glob("*.json")):
            try:
                meta = json.loads(meta_path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            meta["digest"] = meta_path.stem
            out.append(meta)
        return out

    def clear(self) -> int:
        """Remove every entry; returns the number of files removed."""
        n = 0
        if self.root.is_dir():
            for p in list(self.root.glob("*.engine")) + list(self.root.glob("*.json")):
                p.unlink(missing_ok=True)
                n += 1
        return n

