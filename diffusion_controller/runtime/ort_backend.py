"""onnxruntime backend: the exported encoder and Loop-denoiser graphs, on CPU, CUDA or TensorRT EP.

Two session runs per inference (encoder, then the whole DDIM loop), whatever the step count. On
CUDA the condition stays on the device between the two runs (IO binding), so only the small noise
and schedule arrays cross the bus. The export is made on the fly (needs torch) when the one next
to the model is missing, stale or corrupt.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from diffusion_controller.policy.artifact import load_config, verify_weights
from diffusion_controller.policy.config import PolicyConfig
from diffusion_controller.policy.normalize import Normalizer
from diffusion_controller.runtime.backend import PolicyBackend
from diffusion_controller.runtime.denoise_plan import DenoisePlan
from diffusion_controller.runtime.engine_cache import resolve_cache_dir
from diffusion_controller.runtime.onnx_export import (
    ExportError,
    ensure_export,
    export_onnx,
)

log = logging.getLogger(__name__)

DEVICES = ("cpu", "cuda", "tensorrt")


def _providers(device: str, fp16: bool, cache_dir: Path) -> list[Any]:
    available = ort.get_available_providers()
    if device == "cpu":
        if fp16:
            raise ValueError("onnxruntime on the CPU runs fp32 only; fp16 needs device 'tensorrt'")
        return ["CPUExecutionProvider"]
    if device == "cuda":
        if "CUDAExecutionProvider" not in available:
            raise ValueError(f"onnxruntime has no CUDAExecutionProvider here (available: "
                             f"{available}); install onnxruntime-gpu")
        if fp16:
            raise ValueError("fp16 with onnxruntime needs device 'tensorrt' (TensorRT EP) or the "
                             "tensorrt backend")
        return [("CUDAExecutionProvider", {"device_id": 0}), "CPUExecutionProvider"]
    if device == "tensorrt":
        if "TensorrtExecutionProvider" not in available:
            raise ValueError(f"onnxruntime has no TensorrtExecutionProvider here (available: "
                             f"{available})")
        cache_dir.mkdir(parents=True, exist_ok=True)
        trt_opts = {
            "device_id": 0,
            "trt_fp16_enable": bool(fp16),
            "trt_engine_cache_enable": True,
            "trt_engine_cache_path": os.fspath(cache_dir),
            "trt_timing_cache_enable": True,
            "trt_timing_cache_path": os.fspath(cache_dir),
        }
        return [("TensorrtExecutionProvider", trt_opts),
                ("CUDAExecutionProvider", {"device_id": 0}), "CPUExecutionProvider"]
    raise ValueError(f"onnxruntime device must be one of {list(DEVICES)}, got {device!r}")


class OrtBackend(PolicyBackend):
    name = "onnxruntime"

    def __init__(self, export_dir: str | os.PathLike[str], config: PolicyConfig,
                 normalizers: Mapping[str, Normalizer], meta: Mapping[str, Any] | None = None,
                 model_dir: str | None = None, device: str = "cpu", fp16: bool = False,
                 cache_dir: str | os.PathLike[str] | None = None, threads: int | None = None,
                 manifest: Mapping[str, Any] | None = None) -> None:
        super().__init__(config, normalizers, meta, model_dir)
        self.export_dir = Path(export_dir)
        self.device = device
        self.precision = "fp16" if fp16 else "fp32"
        self.name = "onnxruntime" if device == "cpu" else f"onnxruntime:{device}"
        engines = resolve_cache_dir(cache_dir) / "ort_trt"
        self.providers = _providers(device, fp16, engines)
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.inter_op_num_threads = 1
        if threads is not None:
            opts.intra_op_num_threads = int(threads)
        opts.log_severity_level = 3
        second = "denoiser" if config.kind == "diffusion" else "head"
        self.sessions: dict[str, ort.InferenceSession] = {}
        for role in ("encoder", second):
            path = self.export_dir / f"{role}.onnx"
            try:
                self.sessions[role] = ort.InferenceSession(os.fspath(path), sess_options=opts,
                                                           providers=self.providers)
            except Exception as exc:  # onnxruntime raises its own exception types
                raise ExportError(
                    f"{path}: onnxruntime cannot load the {role} graph ({exc})") from exc
        self.manifest = dict(manifest or {})
        self._on_device = device != "cpu"

    @classmethod
    def load(cls, model_dir: str | os.PathLike[str], device: str = "cpu", fp16: bool = False,
             cache_dir: str | os.PathLike[str] | None = None,
             threads: int | None = None) -> OrtBackend:
        """Open the artifact's ONNX export (made or remade first if needed). The weights file is
        verified too, so a tampered artifact is refused even when its export looks fine."""
        cfg, norms, meta = load_config(model_dir)
        verify_weights(model_dir, meta["weights"]["sha256"])
        export_dir, manifest = ensure_export(model_dir, cache_dir)
        kwargs = dict(config=cfg, normalizers=norms, meta=meta, model_dir=os.fspath(model_dir),
                      device=device, fp16=fp16, cache_dir=cache_dir, threads=threads)
        try:
            return cls(export_dir, manifest=manifest, **kwargs)
        except ExportError as exc:
            # The files matched their manifest but onnxruntime refused them (e.g. written by a
            # broken exporter): export again once, then give up with the runtime's message.
            log.warning("%s; re-exporting", exc)
            manifest = export_onnx(model_dir, export_dir)
            return cls(export_dir, manifest=manifest, **kwargs)

    # --- running -----------------------------------------------------------------------------
    def _encode(self, images: np.ndarray, joints: np.ndarray) -> Any:
        sess = self.sessions["encoder"]
        if not self._on_device:
            return sess.run(None, {"images": images, "joints": joints})[0]
        binding = sess.io_binding()
        binding.bind_cpu_input("images", images)
        binding.bind_cpu_input("joints", joints)
        binding.bind_output("cond", "cuda")
        sess.run_with_iobinding(binding)
        return binding.get_outputs()[0]  # OrtValue on the GPU

    def _denoise(self, cond: Any, plan: DenoisePlan) -> np.ndarray:
        sess = self.sessions["denoiser"]
        feeds = {
            "x_init": plan.x_init, "x_noise": plan.x_noise, "schedule": plan.schedule,
            "step_noise": plan.step_noise, "prefix": plan.prefix, "prefix_mask": plan.prefix_mask,
        }
        if not self._on_device:
            return sess.run(None, {"cond": cond, **feeds})[0]
        binding = sess.io_binding()
        binding.bind_ortvalue_input("cond", cond)
        for name, arr in feeds.items():
            binding.bind_cpu_input(name, np.ascontiguousarray(arr))
        binding.bind_output("actions", "cpu")
        sess.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()[0]

    def _regress(self, cond: Any) -> np.ndarray:
        sess = self.sessions["head"]
        if not self._on_device:
            return sess.run(None, {"cond": cond})[0]
        binding = sess.io_binding()
        binding.bind_ortvalue_input("cond", cond)
        binding.bind_output("actions", "cpu")
        sess.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()[0]
