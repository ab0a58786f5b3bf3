"""TensorRT backend pieces that need no GPU: optimisation profiles against the exported graphs, and
clear errors where TensorRT or CUDA are missing. Engine building itself is in
test/integration/test_runtime_gpu.py (skipped without a GPU)."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from diffusion_controller.runtime.onnx_export import export_onnx
from diffusion_controller.runtime.random_model import make_random_artifact
from diffusion_controller.runtime.tensorrt_backend import cuda_device_available, engine_profiles

torch.set_num_threads(1)
TINY = dict(image_size=(16, 16), unet={"down_dims": [16, 32], "kernel_size": 3, "n_groups": 4,
                                       "step_embed_dim": 16})


@pytest.mark.parametrize("kind", ["diffusion", "regression"])
def test_profiles_cover_every_graph_input(tmp_path, kind: str) -> None:
    d = make_random_artifact(tmp_path / kind, kind=kind, **TINY)
    manifest = export_onnx(d)
    from diffusion_controller.policy.artifact import load_config

    cfg, _, _ = load_config(d)
    profiles = engine_profiles(cfg, manifest["cond_dim"], max_samples=6)
    assert set(profiles) == set(manifest["files"])
    for role, profile in profiles.items():
        assert list(profile) == manifest["files"][role]["inputs"]
        for lo, opt, hi in profile.values():
            assert len(lo) == len(opt) == len(hi)
            assert all(a <= b <= c for a, b, c in zip(lo, opt, hi, strict=True))
    if kind == "diffusion":
        den = profiles["denoiser"]
        assert den["x_init"][2][0] == 6 and den["x_init"][0][0] == 1
        assert den["schedule"][0] == (1, 6)
        assert den["schedule"][1] == (cfg.diffusion.inference_steps, 6)
        assert den["schedule"][2] == (cfg.diffusion.num_train_timesteps, 6)
        assert den["step_noise"][2] == (cfg.diffusion.num_train_timesteps, 6, cfg.horizon,
                                        cfg.action_dim)


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None,
                    reason="tensorrt is installed: the missing-library error cannot be shown")
def test_missing_tensorrt_is_a_clear_error(tmp_path) -> None:
    from diffusion_controller.runtime.loading import load_backend

    d = make_random_artifact(tmp_path / "m", **TINY)
    with pytest.raises(RuntimeError, match="tensorrt Python package"):
        load_backend(d, "tensorrt")


def test_cuda_probe_agrees_with_torch() -> None:
    if torch.cuda.is_available():
        assert cuda_device_available()
    elif importlib.util.find_spec("cuda") is None:
        assert not cuda_device_available()


def test_default_profile_spans_the_num_samples_parameter(tmp_path) -> None:
    """Every num_samples the node accepts fits the engines built by default, and a smaller
    engine refuses a larger value when it is set (before any inference), saying why."""
    from diffusion_controller.policy.artifact import load_config
    from diffusion_controller.ros.params import SPECS
    from diffusion_controller.runtime.tensorrt_backend import DEFAULT_MAX_SAMPLES, TensorRTBackend

    top = int(SPECS["num_samples"].max)
    assert top <= DEFAULT_MAX_SAMPLES
    d = make_random_artifact(tmp_path / "m", **TINY)
    manifest = export_onnx(d)
    cfg, norms, meta = load_config(d)
    den = engine_profiles(cfg, manifest["cond_dim"], DEFAULT_MAX_SAMPLES)["denoiser"]
    assert den["x_init"][2][0] >= top and den["step_noise"][2][1] >= top
    small = TensorRTBackend({}, cfg, norms, meta, str(d), max_samples=4)  # no engine needed
    assert small.check_num_samples(4) == 4
    with pytest.raises(ValueError, match="num_samples 5 exceeds the 4 this tensorrt backend"):
        small.check_num_samples(5)
    assert small.status()["max_samples"] == 4


@pytest.mark.parametrize("kind", ["diffusion", "regression"])
def test_profiles_with_a_gripper_match_the_exported_shapes(tmp_path, kind: str) -> None:
    """A model with a gripper (7 joints + the width): every fixed dimension of the TensorRT
    profiles equals the exported graph's, so an engine builds for the 8-wide state and chunk."""
    import onnx

    from diffusion_controller.data.gripper import GripperConfig
    from diffusion_controller.policy.artifact import load_config

    d = make_random_artifact(tmp_path / kind, kind=kind, gripper=GripperConfig(), **TINY)
    manifest = export_onnx(d)
    cfg, _, _ = load_config(d)
    assert cfg.action_dim == 8
    profiles = engine_profiles(cfg, manifest["cond_dim"], max_samples=4)
    assert profiles["encoder"]["joints"][0] == (1, cfg.n_obs_steps, 8)
    for role, profile in profiles.items():
        graph = onnx.load(str(tmp_path / kind / "onnx" / f"{role}.onnx")).graph
        dims = {i.name: [x.dim_value if x.HasField("dim_value") else None
                         for x in i.type.tensor_type.shape.dim] for i in graph.input}
        for name, (lo, _, hi) in profile.items():
            assert len(dims[name]) == len(lo), (role, name)
            for static, a, b in zip(dims[name], lo, hi, strict=True):
                if static is not None:  # a fixed graph dimension: the profile must match it
                    assert a == b == static, (role, name, dims[name], lo, hi)
