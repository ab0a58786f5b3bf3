"""GPU backends (TensorRT native, onnxruntime CUDA / TensorRT EP, torch CUDA) against the CPU torch
reference. Each test skips, with the reason, where its library or a CUDA GPU is missing.

Tolerances: FP32 engines are built without TF32, so they match to 1e-3 rad (allowing for cuDNN /
TensorRT kernel reduction order). onnxruntime CUDA and torch CUDA may use TF32 on Ampere and later,
hence 5e-3 rad. FP16: 5e-2 rad over an 8-step chunk (docs/jetson.md explains the figure).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diffusion_controller.runtime.loading import available_backends, load_backend
from diffusion_controller.runtime.random_model import make_random_artifact

pytestmark = pytest.mark.gpu
AVAILABLE = available_backends()
torch.set_num_threads(1)


def _need(spec: str) -> pytest.MarkDecorator:
    return pytest.mark.skipif(spec not in AVAILABLE,
                              reason=f"backend {spec!r} unavailable here (no CUDA GPU or library); "
                                     f"available: {AVAILABLE}")


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> str:
    return make_random_artifact(tmp_path_factory.mktemp("gpu") / "model", seed=0)


@pytest.fixture(scope="module")
def reference(model: str):
    return load_backend(model, "torch")


def _compare(reference, other, tol: float, **kw) -> None:
    rng = np.random.default_rng(0)
    for i in range(3):
        obs = reference.random_observation(rng)
        a = reference.infer(obs, seed=i, **kw)
        b = other.infer(obs, seed=i, **kw)
        err = float(np.max(np.abs(a.actions - b.actions)))
        assert err <= tol, f"{other.name}: max abs error {err:.2e} rad > {tol:.0e}"


@_need("tensorrt")
@pytest.mark.parametrize("steps", [1, 4, 8])
def test_tensorrt_fp32_parity(model, reference, tmp_path_factory, steps: int) -> None:
    cache = tmp_path_factory.getbasetemp() / "trt-cache"
    b = load_backend(model, "tensorrt", cache_dir=cache)
    _compare(reference, b, 1e-3, steps=steps)


@_need("tensorrt")
def test_tensorrt_warm_start_prefix_samples_and_cache(model, reference, tmp_path_factory) -> None:
    cache = tmp_path_factory.getbasetemp() / "trt-cache"
    b = load_backend(model, "tensorrt", cache_dir=cache)
    obs = reference.random_observation(np.random.default_rng(1))
    prev = reference.infer(obs, seed=0).actions
    kw = dict(seed=3, warm_start=prev, prefix=prev[:2], num_samples=4)
    a, c = reference.infer(obs, **kw), b.infer(obs, **kw)
    assert np.max(np.abs(a.samples - c.samples)) <= 1e-3
    np.testing.assert_array_equal(c.actions[:2], prev[:2])
    from diffusion_controller.runtime.tensorrt_backend import build_engines

    again = build_engines(model, cache_dir=cache)
    assert not any(e["built"] for e in again.values())  # served from the cache


@_need("tensorrt")
def test_tensorrt_fp16_within_documented_tolerance(model, reference, tmp_path_factory) -> None:
    b = load_backend(model, "tensorrt", fp16=True,
                     cache_dir=tmp_path_factory.getbasetemp() / "trt-cache")
    _compare(reference, b, 5e-2)


@_need("onnxruntime:cuda")
def test_onnxruntime_cuda_parity(model, reference) -> None:
    _compare(reference, load_backend(model, "onnxruntime:cuda"), 5e-3, steps=8)


@_need("onnxruntime:tensorrt")
def test_onnxruntime_tensorrt_ep_parity(model, reference, tmp_path_factory) -> None:
    b = load_backend(model, "onnxruntime:tensorrt",
                     cache_dir=tmp_path_factory.getbasetemp() / "ort-trt")
    _compare(reference, b, 5e-3, steps=8)


@_need("torch:cuda")
def test_torch_cuda_parity(model, reference) -> None:
    _compare(reference, load_backend(model, "torch:cuda"), 5e-3, steps=8)
