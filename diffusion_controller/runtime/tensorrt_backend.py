"""Native TensorRT 10 backend: engines built from the ONNX export, cached on disk, run with
execute_async_v3 on device buffers from torch (when it has CUDA) or cuda-python.

Engines: the encoder (fixed shapes) and the Loop denoiser (or the regression head) with one
optimisation profile covering K = 1..max_samples samples and S = 1..num_train_timesteps steps, so
one engine serves every step count, warm start and prefix. With fp16 the U-Net runs in half
precision while the DDIM arithmetic outside it (the update, prefix re-noising) is asked to stay in
fp32 (precision constraints, "prefer"), because x0 = (x - sqrt(1-a) eps) / sqrt(a) divides by
numbers as small as 0.006 at the noisiest step.

Building an engine takes minutes on a Jetson; runtime.engine_cache keys each engine by the ONNX
hash, precision, profile shapes, TensorRT version and GPU, so a cached engine is never used on a
GPU or TensorRT it was not built for.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from diffusion_controller.policy.artifact import load_config, verify_weights
from diffusion_controller.policy.config import PolicyConfig
from diffusion_controller.policy.normalize import Normalizer
from diffusion_controller.runtime.backend import PolicyBackend
from diffusion_controller.runtime.denoise_plan import DenoisePlan
from diffusion_controller.runtime.engine_cache import EngineCache, EngineKey, resolve_cache_dir
from diffusion_controller.runtime.onnx_export import ensure_export

log = logging.getLogger(__name__)

WORKSPACE_BYTES = 1 << 30
# The engines' optimisation profile spans K = 1..this: the num_samples parameter's whole range
# (a test holds them together), so any value the node accepts runs without a rebuild.
DEFAULT_MAX_SAMPLES = 32
Shape = tuple[int, ...]
Profile = dict[str, tuple[Shape, Shape, Shape]]


def _import_trt() -> Any:
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise RuntimeError("the tensorrt backend needs the tensorrt Python package (on a Jetson it "
                           "comes with JetPack: python3-libnvinfer); see docs/jetson.md") from exc
    return trt


def _cudart() -> Any | None:
    """cuda-python's runtime module under its new or old import path, or None."""
    try:
        from cuda.bindings import runtime as cudart

        return cudart
    except ImportError:
        pass
    try:
        from cuda import cudart

        return cudart
    except ImportError:
        return None


def _torch_cuda() -> Any | None:
    try:
        import torch
    except ImportError:
        return None
    return torch if torch.cuda.is_available() else None


def cuda_device_available() -> bool:
    if _torch_cuda() is not None:
        return True
    cudart = _cudart()
    if cudart is None:
        return False
    err, count = cudart.cudaGetDeviceCount()
    return int(err) == 0 and count > 0


def gpu_identity() -> tuple[str, str]:
    """(GPU name, compute capability "major.minor") of device 0: part of every engine's key."""
    torch = _torch_cuda()
    if torch is not None:
        major, minor = torch.cuda.get_device_capability(0)
        return torch.cuda.get_device_name(0), f"{major}.{minor}"
    cudart = _cudart()
    if cudart is None:
        raise RuntimeError("no CUDA runtime found: install torch with CUDA or cuda-python")
    err, prop = cudart.cudaGetDeviceProperties(0)
    if int(err) != 0:
        raise RuntimeError(f"cudaGetDeviceProperties failed ({err})")
    name = prop.name.decode() if isinstance(prop.name, bytes) else str(prop.name)
    return name.strip("\x00 "), f"{prop.major}.{prop.minor}"


# --- device memory -----------------------------------------------------------------------------
class _TorchDevice:
    """Device buffers as torch CUDA tensors on torch's current stream."""

    def __init__(self, torch: Any) -> None:
        self.torch = torch
        self.stream = torch.cuda.Stream()

    @property
    def stream_handle(self) -> int:
        return int(self.stream.cuda_stream)

    def to_device(self, arr: np.ndarray) -> Any:
        with self.torch.cuda.stream(self.stream):
            return self.torch.from_numpy(np.ascontiguousarray(arr)).to("cuda", non_blocking=False)

    def empty(self, shape: Shape, dtype: np.dtype) -> Any:
        tdtype = {np.dtype(np.float32): self.torch.float32,
                  np.dtype(np.float16): self.torch.float16}[np.dtype(dtype)]
        return self.torch.empty(shape, dtype=tdtype, device="cuda")

    @staticmethod
    def ptr(buf: Any) -> int:
        return int(buf.data_ptr())

    def to_host(self, buf: Any) -> np.ndarray:
        self.stream.synchronize()
        return buf.float().cpu().numpy()

    def synchronize(self) -> None:
        self.stream.synchronize()


class _CudaBuffer:
    def __init__(self, cudart: Any, shape: Shape, dtype: np.dtype) -> None:
        self.cudart, self.shape, self.dtype = cudart, tuple(shape), np.dtype(dtype)
        self.nbytes = int(np.prod(self.shape)) * self.dtype.itemsize
        err, self.ptr = cudart.cudaMalloc(max(self.nbytes, 1))
        if int(err) != 0:
            raise RuntimeError(f"cudaMalloc({self.nbytes}) failed ({err})")

    def __del__(self) -> None:
        ptr = getattr(self, "ptr", None)
        if ptr:
            self.cudart.cudaFree(ptr)


class _CudaPythonDevice:
    """Device buffers from cuda-python (cudaMalloc / cudaMemcpyAsync) when torch has no CUDA."""

    def __init__(self, cudart: Any) -> None:
        self.cudart = cudart
        err, self.stream = cudart.cudaStreamCreate()
        if int(err) != 0:
            raise RuntimeError(f"cudaStreamCreate failed ({err})")

    @property
    def stream_handle(self) -> int:
        return int(self.stream)

    def _check(self, result: Any, what: str) -> None:
        err = result[0] if isinstance(result, tuple) else result
        if int(err) != 0:
            raise RuntimeError(f"{what} failed ({err})")

    def to_device(self, arr: np.ndarray) -> _CudaBuffer:
        host = np.ascontiguousarray(arr)
        buf = _CudaBuffer(self.cudart, host.shape, host.dtype)
        kind = self.cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._check(self.cudart.cudaMemcpyAsync(buf.ptr, host.ctypes.data, buf.nbytes, kind,
                                                self.stream), "cudaMemcpyAsync H2D")
        self.synchronize()  # `host` may be a temporary
        return buf

    def empty(self, shape: Shape, dtype: np.dtype) -> _CudaBuffer:
        return _CudaBuffer(self.cudart, shape, dtype)

    @staticmethod
    def ptr(buf: _CudaBuffer) -> int:
        return int(buf.ptr)

    def to_host(self, buf: _CudaBuffer) -> np.ndarray:
        out = np.empty(buf.shape, dtype=buf.dtype)
        kind = self.cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._check(self.cudart.cudaMemcpyAsync(out.ctypes.data, buf.ptr, buf.nbytes, kind,
                                                self.stream), "cudaMemcpyAsync D2H")
        self.synchronize()
        return out.astype(np.float32, copy=False)

    def synchronize(self) -> None:
        self._check(self.cudart.cudaStreamSynchronize(self.stream), "cudaStreamSynchronize")


def _device() -> _TorchDevice | _CudaPythonDevice:
    torch = _torch_cuda()
    if torch is not None:
        return _TorchDevice(torch)
    cudart = _cudart()
    if cudart is None:
        raise RuntimeError("the tensorrt backend needs device memory: install torch with CUDA "
                           "or cuda-python")
    return _CudaPythonDevice(cudart)


# --- building ----------------------------------------------------------------------------------
def build_engine(onnx_path: str | os.PathLike[str], profile: Profile, fp16: bool,
                 workspace: int = WORKSPACE_BYTES) -> bytes:
    """Parse `onnx_path` and build a serialized engine with one optimisation profile."""
    trt = _import_trt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(os.fspath(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT cannot parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace))
    if not fp16:
        # FP32 means FP32: TF32 (on by default on Ampere and later, Orin included) rounds conv
        # inputs to 10 mantissa bits, which costs parity with the reference for little speed.
        config.clear_flag(trt.BuilderFlag.TF32)
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
        config.set_flag(trt.BuilderFlag.PREFER_PRECISION_CONSTRAINTS)
        _keep_ddim_in_fp32(trt, network)
    prof = builder.create_optimization_profile()
    for name, (lo, opt, hi) in profile.items():
        prof.set_shape(name, lo, opt, hi)
    config.add_optimization_profile(prof)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT failed to build an engine from {onnx_path} (see its log)")
    return bytes(serialized)


def _keep_ddim_in_fp32(trt: Any, network: Any) -> int:
    """Ask for fp32 on the float layers outside the network proper (ONNX names not under "/net/":
    the DDIM update and prefix arithmetic) and on the timestep embedding (sin/cos of t * freq
    with t up to num_train_timesteps loses too much in fp16). Returns how many were constrained."""
    n = 0
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        if "/net/" in layer.name and "step_embed" not in layer.name:
            continue
        outs = [layer.get_output(k) for k in range(layer.num_outputs)]
        if not outs or any(o is None or o.dtype != trt.float32 for o in outs):
            continue
        try:
            layer.precision = trt.float32
            for k in range(layer.num_outputs):
                layer.set_output_type(k, trt.float32)
            n += 1
        except (RuntimeError, TypeError, ValueError):  # layer kinds that take no precision
            continue
    return n


class TrtRunner:
    """One deserialized engine with its execution context; feeds host arrays or device buffers."""

    def __init__(self, engine_bytes: bytes, device: _TorchDevice | _CudaPythonDevice) -> None:
        trt = _import_trt()
        self.trt = trt
        self.runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = self.runtime.deserialize_cuda_engine(engine_bytes)
        if self.engine is None:
            raise RuntimeError("TensorRT could not deserialize the engine (built for another "
                               "TensorRT version or GPU?)")
        self.context = self.engine.create_execution_context()
        self.device = device
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names
                       if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if n not in self.inputs]
        self.dtypes = {n: np.dtype(trt.nptype(self.engine.get_tensor_dtype(n))) for n in names}

    def run(self, feeds: Mapping[str, Any], keep_on_device: bool = False) -> dict[str, Any]:
        """Feeds: name -> numpy array (copied to the device) or a device buffer from a previous
        run. Returns outputs as numpy float32 arrays, or device buffers if `keep_on_device`."""
        keep = []  # device buffers must outlive execute_async_v3
        for name in self.inputs:
            value = feeds[name]
            if isinstance(value, np.ndarray):
                value = self.device.to_device(value.astype(self.dtypes[name], copy=False))
            keep.append(value)
            shape = tuple(value.shape)
            if not self.context.set_input_shape(name, shape):
                raise ValueError(f"TensorRT: input {name} shape {shape} is outside the engine's "
                                 f"optimisation profile")
            self.context.set_tensor_address(name, self.device.ptr(value))
        outs = {}
        for name in self.outputs:
            shape = tuple(self.context.get_tensor_shape(name))
            buf = self.device.empty(shape, self.dtypes[name])
            outs[name] = buf
            self.context.set_tensor_address(name, self.device.ptr(buf))
        if not self.context.execute_async_v3(self.device.stream_handle):
            raise RuntimeError("TensorRT execute_async_v3 failed")
        if keep_on_device:
            self.device.synchronize()
            return outs
        return {n: self.device.to_host(b) for n, b in outs.items()}


def engine_profiles(cfg: PolicyConfig, cond_dim: int, max_samples: int) -> dict[str, Profile]:
    """Optimisation profiles per graph role: fixed observation shapes, K in 1..max_samples,
    S in 1..num_train_timesteps (opt at the configured step count)."""
    to, ncam, (ih, iw), h, j = (cfg.n_obs_steps, len(cfg.cameras), cfg.image_size, cfg.horizon,
                                cfg.action_dim)

    def fixed(*shape: int) -> tuple[Shape, Shape, Shape]:
        return (shape, shape, shape)

    out: dict[str, Profile] = {
        "encoder": {"images": fixed(1, to, ncam, 3, ih, iw), "joints": fixed(1, to, j)},
    }
    if cfg.kind == "diffusion":
        s_max, s_opt = cfg.diffusion.num_train_timesteps, cfg.diffusion.inference_steps
        k = max_samples
        out["denoiser"] = {
            "cond": fixed(1, cond_dim),
            "x_init": ((1, h, j), (1, h, j), (k, h, j)),
            "x_noise": ((1, h, j), (1, h, j), (k, h, j)),
            "schedule": ((1, 6), (s_opt, 6), (s_max, 6)),
            "step_noise": ((1, 1, h, j), (s_opt, 1, h, j), (s_max, k, h, j)),
            "prefix": fixed(1, h, j),
            "prefix_mask": fixed(1, h, 1),
        }
    else:
        out["head"] = {"cond": fixed(1, cond_dim)}
    return out


def build_engines(model_dir: str | os.PathLike[str], fp16: bool = False,
                  cache_dir: str | os.PathLike[str] | None = None,
                  max_samples: int = DEFAULT_MAX_SAMPLES) -> dict[str, dict[str, Any]]:
    """Get (from the cache) or build every engine of the artifact; returns per role the engine
    bytes, cache path, key digest and whether it was built now."""
    trt = _import_trt()
    if not cuda_device_available():
        raise RuntimeError("the tensorrt backend needs a CUDA GPU and none is visible")
    cfg, _, _ = load_config(model_dir)
    export_dir, manifest = ensure_export(model_dir, cache_dir)
    gpu_name, cc = gpu_identity()
    cache = EngineCache(resolve_cache_dir(cache_dir))
    out: dict[str, dict[str, Any]] = {}
    for role, profile in engine_profiles(cfg, int(manifest["cond_dim"]), max_samples).items():
        info = manifest["files"][role]
        key = EngineKey(onnx_sha256=info["sha256"], precision="fp16" if fp16 else "fp32",
                        shapes=profile, trt_version=str(trt.__version__), gpu_name=gpu_name,
                        compute_capability=cc, extra={"role": role})
        path = export_dir / info["file"]
        data, built = cache.get_or_build(
            key, lambda p=path, prof=profile: build_engine(p, prof, fp16),
            info={"model_dir": os.path.abspath(os.fspath(model_dir)), "role": role})
        out[role] = {"engine": data, "path": os.fspath(cache.paths(key)[0]),
                     "digest": key.digest(), "built": built}
    return out


class TensorRTBackend(PolicyBackend):
    name = "tensorrt"

    def __init__(self, runners: Mapping[str, TrtRunner], config: PolicyConfig,
                 normalizers: Mapping[str, Normalizer], meta: Mapping[str, Any] | None = None,
                 model_dir: str | None = None, fp16: bool = False,
                 max_samples: int = DEFAULT_MAX_SAMPLES) -> None:
        super().__init__(config, normalizers, meta, model_dir)
        self.runners = dict(runners)
        self.device = "cuda"
        self.precision = "fp16" if fp16 else "fp32"
        self.max_samples = int(max_samples)

    @classmethod
    def load(cls, model_dir: str | os.PathLike[str], fp16: bool = False,
             cache_dir: str | os.PathLike[str] | None = None,
             max_samples: int = DEFAULT_MAX_SAMPLES) -> TensorRTBackend:
        cfg, norms, meta = load_config(model_dir)
        verify_weights(model_dir, meta["weights"]["sha256"])
        engines = build_engines(model_dir, fp16=fp16, cache_dir=cache_dir,
                                max_samples=max_samples)
        device = _device()
        runners = {role: TrtRunner(e["engine"], device) for role, e in engines.items()}
        return cls(runners, cfg, norms, meta, os.fspath(model_dir), fp16=fp16,
                   max_samples=max_samples)

    def _encode(self, images: np.ndarray, joints: np.ndarray) -> Any:
        return self.runners["encoder"].run({"images": images, "joints": joints},
                                           keep_on_device=True)["cond"]

    def _denoise(self, cond: Any, plan: DenoisePlan) -> np.ndarray:
        self.check_num_samples(plan.num_samples)
        feeds = {"cond": cond, "x_init": plan.x_init, "x_noise": plan.x_noise,
                 "schedule": plan.schedule, "step_noise": plan.step_noise,
                 "prefix": plan.prefix, "prefix_mask": plan.prefix_mask}
        return self.runners["denoiser"].run(feeds)["actions"]

    def _regress(self, cond: Any) -> np.ndarray:
        return self.runners["head"].run({"cond": cond})["actions"]
