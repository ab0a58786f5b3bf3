"""Which inference backends this machine can run, and opening a model artifact with one.

`available_backends()` lists the specs usable here ("torch", "torch:cuda", "onnxruntime",
"onnxruntime:cuda", "onnxruntime:tensorrt", "tensorrt"); `load_backend(model_dir, backend)` opens
the artifact with the named one or, with "auto", the fastest available (TensorRT on a CUDA GPU,
then onnxruntime with CUDA, then onnxruntime on the CPU, then torch). The backends themselves are
imported only when chosen, so a machine without torch or TensorRT never loads them.
"""

from __future__ import annotations

import importlib.util
import logging
import os

from diffusion_controller.runtime.backend import PolicyBackend
from diffusion_controller.settings.controller import BACKENDS

log = logging.getLogger("diffusion_controller.runtime.backend")  # the name users filter on


def _has_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _torch_cuda() -> bool:
    if not _has_module("torch"):
        return False
    import torch

    return bool(torch.cuda.is_available())


def _ort_providers() -> list[str]:
    if not _has_module("onnxruntime"):
        return []
    import onnxruntime as ort

    return list(ort.get_available_providers())


def available_backends() -> list[str]:
    """Backend specs usable here: "torch", "torch:cuda", "onnxruntime" (CPU),
    "onnxruntime:cuda", "onnxruntime:tensorrt", "tensorrt"."""
    out: list[str] = []
    has_torch = _has_module("torch")
    cuda = _torch_cuda()
    if has_torch:
        out.append("torch")
        if cuda:
            out.append("torch:cuda")
    providers = _ort_providers()
    if "CPUExecutionProvider" in providers:
        out.append("onnxruntime")
    if "CUDAExecutionProvider" in providers:
        out.append("onnxruntime:cuda")
    if "TensorrtExecutionProvider" in providers:
        out.append("onnxruntime:tensorrt")
    if _has_module("tensorrt"):
        from diffusion_controller.runtime.tensorrt_backend import cuda_device_available

        if cuda_device_available():
            out.append("tensorrt")
    return out


def parse_backend(spec: str, device: str | None = None) -> tuple[str, str | None]:
    """"onnxruntime:cuda" -> ("onnxruntime", "cuda"); an explicit `device` wins over the suffix."""
    name, _, dev = str(spec).partition(":")
    name = name.strip().lower()
    if name not in (*BACKENDS, "auto"):
        raise ValueError(f"unknown backend {spec!r}; choose from {['auto', *BACKENDS]}")
    return name, (device or dev or None)


def _auto(model_dir: str) -> tuple[str, str | None]:
    avail = available_backends()
    if "tensorrt" in avail:
        return "tensorrt", "cuda"
    if "onnxruntime:cuda" in avail:
        return "onnxruntime", "cuda"
    if "onnxruntime" in avail:
        from diffusion_controller.runtime.onnx_manifest import export_is_current

        if "torch" in avail or export_is_current(model_dir):
            return "onnxruntime", "cpu"
    if "torch" in avail:
        return "torch", "cuda" if "torch:cuda" in avail else "cpu"
    raise RuntimeError("no inference backend available: install onnxruntime (with an ONNX export "
                       "of the model) or torch")


def load_backend(
    model_dir: str | os.PathLike[str],
    backend: str = "auto",
    device: str | None = None,
    fp16: bool = False,
    cache_dir: str | os.PathLike[str] | None = None,
    threads: int | None = None,
) -> PolicyBackend:
    """Open the artifact in `model_dir` with `backend` ("auto", "torch", "onnxruntime",
    "tensorrt", or "name:device"). "auto" prefers TensorRT on a CUDA GPU, then onnxruntime with
    CUDA, then onnxruntime on the CPU (when an up-to-date ONNX export exists or torch can make
    one), then torch. `threads` sets CPU intra-op threads; `cache_dir` is the engine cache
    directory (default ~/.cache/diffusion_controller/engines), which also holds the ONNX export
    of a read-only model directory."""
    model_dir = os.fspath(model_dir)
    if threads is not None and (isinstance(threads, bool) or int(threads) < 1):
        raise ValueError(f"threads must be a positive integer, got {threads!r}")
    name, dev = parse_backend(backend, device)
    if name == "auto":
        name, auto_dev = _auto(model_dir)
        dev = dev or auto_dev
        log.info("auto backend: %s on %s", name, dev)
        if fp16 and not (name == "tensorrt" or (name == "onnxruntime" and dev == "tensorrt")):
            # fp16 is a TensorRT setting (config/arm.yaml asks for it with backend auto); on a
            # machine without TensorRT the same file must still configure, in fp32. An explicit
            # backend that cannot run fp16 is still an error below.
            log.warning("fp16 requested but the auto backend is %s on %s, not TensorRT: "
                        "running fp32", name, dev)
            fp16 = False
    if name == "torch":
        from diffusion_controller.runtime.torch_backend import TorchBackend

        return TorchBackend.load(model_dir, device=dev or "cpu", fp16=fp16, threads=threads)
    if name == "onnxruntime":
        from diffusion_controller.runtime.ort_backend import OrtBackend

        return OrtBackend.load(model_dir, device=dev or "cpu", fp16=fp16, cache_dir=cache_dir,
                               threads=threads)
    from diffusion_controller.runtime.tensorrt_backend import TensorRTBackend

    if dev not in (None, "cuda"):
        raise ValueError(f"the tensorrt backend runs on 'cuda', not {dev!r}")
    return TensorRTBackend.load(model_dir, fp16=fp16, cache_dir=cache_dir)
