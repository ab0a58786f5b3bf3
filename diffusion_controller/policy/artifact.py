"""Model artifacts: a directory holding the weights, the config that rebuilds them, and a card.

    model_dir/
      model.safetensors   weights (the EMA weights after training), float32
      config.json         format version, PolicyConfig, normalisation statistics, sha256 of the
                          weights, parameter count, training metadata
      MODEL_CARD.md       what it is, what it was trained on, how well it did

A model drives a real arm, so loading is paranoid: every problem (missing file, bad JSON, unknown
format version, truncated or corrupted weights, hash mismatch, tensors that do not fit the config,
non-finite weights) raises ArtifactError naming it. `load_config` and `verify_weights` need no
torch, for deployments that run an exported engine. MODEL_CARD.md is rendered by
policy/model_card.py.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from diffusion_controller.atomic_io import atomic_write_bytes
from diffusion_controller.policy.config import PolicyConfig
from diffusion_controller.policy.model_card import render_card
from diffusion_controller.policy.normalize import (
    Normalizer,
    normalizers_from_dict,
    normalizers_to_dict,
)

if TYPE_CHECKING:
    from torch import nn

FORMAT = "diffusion_controller.policy"
FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
CARD_FILE = "MODEL_CARD.md"

_DTYPE_BYTES = {
    "F64": 8,
    "F32": 4,
    "F16": 2,
    "BF16": 2,
    "I64": 8,
    "I32": 4,
    "I16": 2,
    "I8": 1,
    "U8": 1,
    "BOOL": 1,
}
_MAX_HEADER = 100 * 1024 * 1024


class ArtifactError(Exception):
    """A model artifact that cannot be used; the message names the file and the problem."""


@dataclass
class PolicyArtifact:
    """A loaded model: the network in eval mode plus everything needed to feed and read it."""

    config: PolicyConfig
    net: nn.Module
    normalizers: dict[str, Normalizer]
    meta: dict[str, Any]
    path: str
    weights_sha256: str
    tensor_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)


def sha256_file(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# --- writing --------------------------------------------------------------------------------
def save_artifact(
    out_dir: str | os.PathLike[str],
    net: nn.Module,
    cfg: PolicyConfig,
    normalizers: Mapping[str, Normalizer],
    card: str | Mapping[str, Any] | None = None,
    extra_meta: Mapping[str, Any] | None = None,
) -> str:
    """Write the artifact into `out_dir` (created if needed); returns the weights' sha256.

    `card` is extra Markdown for the model card (a string, or a mapping rendered as a list of
    "key: value" lines under "Training"); `extra_meta` lands in config.json under "meta".
    """
    import torch
    from safetensors.torch import save as st_save

    out = os.fspath(out_dir)
    os.makedirs(out, exist_ok=True)
    if set(normalizers) != {"joints", "actions"}:
        raise ValueError(f"normalizers must be 'joints' and 'actions', got {sorted(normalizers)}")
    tensors: dict[str, torch.Tensor] = {}
    for name, value in net.state_dict().items():
        t = value.detach().to("cpu").contiguous()
        if t.is_floating_point():
            t = t.to(torch.float32)
            if not bool(torch.isfinite(t).all()):
                raise ValueError(f"refusing to save non-finite weights in {name!r}")
        tensors[name] = t
    blob = st_save(tensors, metadata={"format": FORMAT, "format_version": str(FORMAT_VERSION)})
    atomic_write_bytes(os.path.join(out, WEIGHTS_FILE), blob)
    digest = hashlib.sha256(blob).hexdigest()
    num_params = int(sum(t.numel() for t in tensors.values()))

    from diffusion_controller import __version__

    doc = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "package_version": __version__,
        "policy": cfg.to_dict(),
        "normalizers": normalizers_to_dict(normalizers),
        "weights": {
            "file": WEIGHTS_FILE,
            "sha256": digest,
            "num_params": num_params,
            "num_tensors": len(tensors),
            "dtype": "float32",
        },
        "meta": _jsonable(dict(extra_meta or {})),
    }
    atomic_write_bytes(
        os.path.join(out, CONFIG_FILE), (json.dumps(doc, indent=2, allow_nan=False) + "\n").encode()
    )
    atomic_write_bytes(os.path.join(out, CARD_FILE), render_card(doc, card).encode())
    return digest


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "tolist"):
        return _jsonable(value.tolist())
    if isinstance(value, float) and value != value:  # NaN is not JSON
        return None
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


# --- reading --------------------------------------------------------------------------------
def _model_path(model_dir: str | os.PathLike[str], name: str) -> str:
    root = os.fspath(model_dir)
    if not os.path.isdir(root):
        raise ArtifactError(f"model directory {root!r} does not exist")
    path = os.path.join(root, name)
    if not os.path.isfile(path):
        raise ArtifactError(f"model directory {root!r} has no {name}")
    return path


def read_config_document(model_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """config.json as a dict, with its format and version checked."""
    path = _model_path(model_dir, CONFIG_FILE)
    try:
        with open(path, encoding="utf-8") as fh:
            doc = json.load(fh)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(doc, dict):
        raise ArtifactError(f"{path}: expected a JSON object")
    if doc.get("format") != FORMAT:
        raise ArtifactError(
            f"{path}: not a diffusion_controller policy (format {doc.get('format')!r})"
        )
    version = doc.get("format_version")
    if version != FORMAT_VERSION:
        raise ArtifactError(
            f"{path}: unsupported format version {version!r} (this package reads "
            f"version {FORMAT_VERSION})"
        )
    for key in ("policy", "normalizers", "weights"):
        if key not in doc:
            raise ArtifactError(f"{path}: missing key {key!r}")
    weights = doc["weights"]
    if not isinstance(weights, dict) or not isinstance(weights.get("sha256"), str):
        raise ArtifactError(f"{path}: 'weights' must hold the weights' sha256")
    return doc


def load_config(
    model_dir: str | os.PathLike[str],
) -> tuple[PolicyConfig, dict[str, Normalizer], dict[str, Any]]:
    """(PolicyConfig, {"joints", "actions"} normalizers, meta) without importing torch.

    meta holds the training metadata plus "format_version", "created", "package_version" and
    "weights" (file, sha256, num_params).
    """
    doc = read_config_document(model_dir)
    path = os.path.join(os.fspath(model_dir), CONFIG_FILE)
    try:
        cfg = PolicyConfig.from_dict(doc["policy"], strict=True)
    except (ValueError, TypeError) as exc:
        raise ArtifactError(f"{path}: invalid policy config: {exc}") from exc
    try:
        normalizers = normalizers_from_dict(doc["normalizers"], dim=cfg.action_dim)
    except ValueError as exc:
        raise ArtifactError(f"{path}: invalid normalisation statistics: {exc}") from exc
    meta = dict(doc.get("meta") or {})
    for key in ("format_version", "created", "package_version", "weights"):
        if key in doc:
            meta[key] = doc[key]
    return cfg, normalizers, meta


def read_safetensors_header(path: str) -> dict[str, tuple[str, tuple[int, ...]]]:
    """{name: (dtype, shape)} after checking that the file's layout is whole and consistent."""
    size = os.path.getsize(path)
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise ArtifactError(f"{path}: truncated weights file ({size} bytes)")
        (n,) = struct.unpack("<Q", head)
        if n == 0 or n > _MAX_HEADER or 8 + n > size:
            raise ArtifactError(
                f"{path}: truncated or corrupt weights file (header length {n}, file {size} bytes)"
            )
        raw = fh.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{path}: corrupt weights header ({exc})") from exc
    if not isinstance(header, dict):
        raise ArtifactError(f"{path}: corrupt weights header")
    header.pop("__metadata__", None)
    spans = []
    out: dict[str, tuple[str, tuple[int, ...]]] = {}
    for name, info in header.items():
        try:
            dtype, shape, (begin, end) = (
                info["dtype"],
                tuple(int(s) for s in info["shape"]),
                info["data_offsets"],
            )
            count = 1
            for s in shape:
                count *= s
            expected = count * _DTYPE_BYTES[dtype]
        except (KeyError, TypeError, ValueError) as exc:
            raise ArtifactError(f"{path}: corrupt header entry for {name!r}") from exc
        if end - begin != expected or begin < 0:
            raise ArtifactError(
                f"{path}: tensor {name!r} has {end - begin} bytes for shape {shape} {dtype}"
            )
        spans.append((begin, end))
        out[name] = (dtype, shape)
    data_len = size - 8 - n
    spans.sort()
    pos = 0
    for begin, end in spans:
        if begin != pos:
            raise ArtifactError(f"{path}: corrupt weights layout (gap or overlap at byte {begin})")
        pos = end
    if pos != data_len:
        kind = "truncated" if pos > data_len else "corrupt"
        raise ArtifactError(
            f"{path}: {kind} weights file (tensors need {pos} data bytes, file has {data_len})"
        )
    return out


def verify_weights(
    model_dir: str | os.PathLike[str], expected_sha256: str | None = None
) -> dict[str, tuple[str, tuple[int, ...]]]:
    """Check the weights file's layout and hash (against config.json unless given); no torch."""
    path = _model_path(model_dir, WEIGHTS_FILE)
    if expected_sha256 is None:
        expected_sha256 = read_config_document(model_dir)["weights"]["sha256"]
    tensors = read_safetensors_header(path)
    actual = sha256_file(path)
    if actual != expected_sha256:
        raise ArtifactError(
            f"{path}: weights hash mismatch (file {actual[:16]}..., config.json "
            f"expects {str(expected_sha256)[:16]}...): the weights were modified or "
            f"corrupted"
        )
    return tensors


def load_artifact(model_dir: str | os.PathLike[str], device: str = "cpu") -> PolicyArtifact:
    """Load and check everything; the network is in eval mode on `device`."""
    import torch
    from safetensors.torch import load_file

    from diffusion_controller.policy.model import build_net

    cfg, normalizers, meta = load_config(model_dir)
    sha = meta["weights"]["sha256"]
    header = verify_weights(model_dir, sha)
    path = os.path.join(os.fspath(model_dir), WEIGHTS_FILE)
    try:
        tensors = load_file(path, device="cpu")
    except Exception as exc:  # safetensors raises its own error types
        raise ArtifactError(f"{path}: cannot read weights ({exc})") from exc
    net = build_net(cfg)
    expected = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    wrong = sorted(
        k for k in set(expected) & set(tensors) if tuple(tensors[k].shape) != expected[k]
    )
    problems = []
    if missing:
        problems.append(f"missing tensors {_few(missing)}")
    if extra:
        problems.append(f"unexpected tensors {_few(extra)}")
    if wrong:
        problems.append(
            "mis-shaped tensors "
            + _few([f"{k} {tuple(tensors[k].shape)} != {expected[k]}" for k in wrong])
        )
    if problems:
        raise ArtifactError(f"{path}: weights do not match config.json: " + "; ".join(problems))
    for name, t in tensors.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise ArtifactError(f"{path}: tensor {name!r} contains NaN or Inf")
    net.load_state_dict(tensors, strict=True)
    net.to(device).eval()
    return PolicyArtifact(
        config=cfg,
        net=net,
        normalizers=normalizers,
        meta=meta,
        path=os.path.abspath(os.fspath(model_dir)),
        weights_sha256=sha,
        tensor_shapes={k: v[1] for k, v in header.items()},
    )


def _few(items: list[str], n: int = 5) -> str:
    more = f" (+{len(items) - n} more)" if len(items) > n else ""
    return ", ".join(items[:n]) + more
