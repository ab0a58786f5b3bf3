"""What an ONNX export directory holds and whether it is current: the manifest's format, the
graphs' input and output names, and the checks that an export matches its model artifact (weights
and config hashes, every graph file intact). Needs neither torch nor the `onnx` package, so the
onnxruntime and TensorRT backends can check an export they only run (runtime/onnx_export.py
makes one).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from diffusion_controller.policy.artifact import ArtifactError, load_config
from diffusion_controller.runtime.engine_cache import sha256_file

OPSET = 17
MANIFEST = "manifest.json"
MANIFEST_FORMAT = "diffusion_controller.onnx"
MANIFEST_VERSION = 1
EXPORT_SUBDIR = "onnx"

ENCODER_INPUTS = ("images", "joints")
DENOISER_INPUTS = ("cond", "x_init", "x_noise", "schedule", "step_noise", "prefix", "prefix_mask")
HEAD_INPUTS = ("cond",)
OUTPUT_COND = "cond"
OUTPUT_ACTIONS = "actions"


class ExportError(RuntimeError):
    """An export that is missing, corrupt, stale, or could not be produced."""


def config_hash(model_dir: str | os.PathLike[str]) -> str:
    """sha256 of the policy config (as normalised by PolicyConfig) — what the graphs bake in."""
    cfg, _, _ = load_config(model_dir)
    blob = json.dumps(cfg.to_dict(), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()


def default_export_dir(model_dir: str | os.PathLike[str]) -> Path:
    return Path(model_dir) / EXPORT_SUBDIR


def read_manifest(export_dir: str | os.PathLike[str]) -> dict[str, Any]:
    path = Path(export_dir) / MANIFEST
    if not path.is_file():
        raise ExportError(f"{path}: no ONNX manifest (run `diffusion-controller export`)")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ExportError(f"{path}: unreadable manifest ({exc})") from exc
    if not isinstance(doc, dict) or doc.get("format") != MANIFEST_FORMAT:
        raise ExportError(f"{path}: not a diffusion_controller ONNX manifest")
    if doc.get("version") != MANIFEST_VERSION:
        raise ExportError(f"{path}: unsupported manifest version {doc.get('version')!r}")
    return doc


def check_export(model_dir: str | os.PathLike[str],
                 export_dir: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """The manifest if the export in `export_dir` matches the artifact and every file is intact;
    otherwise ExportError saying what is wrong (stale, missing, corrupt)."""
    export_dir = Path(export_dir) if export_dir is not None else default_export_dir(model_dir)
    doc = read_manifest(export_dir)
    _, _, meta = load_config(model_dir)
    weights_sha = meta["weights"]["sha256"]
    if doc.get("weights_sha256") != weights_sha:
        raise ExportError(f"{export_dir}: stale export (made from other weights)")
    if doc.get("config_sha256") != config_hash(model_dir):
        raise ExportError(f"{export_dir}: stale export (made from another config)")
    for role, info in doc.get("files", {}).items():
        path = export_dir / info["file"]
        if not path.is_file():
            raise ExportError(f"{path}: missing {role} graph")
        if sha256_file(path) != info.get("sha256"):
            raise ExportError(f"{path}: corrupt {role} graph (checksum mismatch)")
    if not doc.get("files"):
        raise ExportError(f"{export_dir}: manifest lists no graphs")
    return doc


def export_is_current(model_dir: str | os.PathLike[str],
                      export_dir: str | os.PathLike[str] | None = None) -> bool:
    try:
        check_export(model_dir, export_dir)
    except (ExportError, ArtifactError, OSError, KeyError, TypeError):
        return False
    return True
