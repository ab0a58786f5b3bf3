"""Networks: shapes for both kinds, timestep forms, determinism, gradients, ONNX (opset 17)."""

from __future__ import annotations

import inspect

import pytest
import torch
from torch import nn

from diffusion_controller.policy.config import PolicyConfig
from diffusion_controller.policy.encoder import ImageEncoder
from diffusion_controller.policy.model import DiffusionPolicyNet, RegressionPolicyNet, build_net

torch.set_num_threads(1)
JOINTS = ["j1", "j2", "j3"]


def tiny(kind: str = "diffusion", **kw) -> PolicyConfig:
    base = {
        "kind": kind,
        "image_size": (24, 32),
        "horizon": 8,
        "n_obs_steps": 2,
        "cameras": ["front", "wrist"],
        "unet": {"down_dims": [16, 32], "n_groups": 4, "step_embed_dim": 16, "kernel_size": 3},
        "mlp_dims": [32],
    }
    base.update(kw)
    return PolicyConfig.cpu_default(JOINTS, **base)


def obs(cfg: PolicyConfig, b: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    images = torch.rand(b, cfg.n_obs_steps, len(cfg.cameras), 3, *cfg.image_size, generator=g)
    joints = torch.rand(b, cfg.n_obs_steps, cfg.action_dim, generator=g) * 2 - 1
    return images, joints


def test_diffusion_net_shapes_and_timestep_forms() -> None:
    cfg = tiny()
    torch.manual_seed(0)
    net = build_net(cfg).eval()
    assert isinstance(net, DiffusionPolicyNet)
    images, joints = obs(cfg)
    cond = net.encode(images, joints)
    assert cond.shape == (2, net.cond_dim)
    assert net.cond_dim == 2 * (2 * cfg.encoder.feature_dim + 3)
    x = torch.randn(2, 8, 3)
    with torch.no_grad():
        out_int = net(x, torch.tensor([5, 5]), cond)
        out_float = net(x, torch.tensor([5.0, 5.0]), cond)
        out_scalar = net(x, torch.tensor(5), cond)
    assert out_int.shape == (2, 8, 3)
    torch.testing.assert_close(out_int, out_float)
    torch.testing.assert_close(out_int, out_scalar)
    # The timestep matters, and the condition matters.
    assert not torch.allclose(out_int, net(x, torch.tensor([50, 50]), cond))
    assert not torch.allclose(out_int, net(x, torch.tensor([5, 5]), cond.flip(0)))


def test_regression_net_shapes() -> None:
    cfg = tiny("regression", horizon=10)
    net = build_net(cfg).eval()
    assert isinstance(net, RegressionPolicyNet)
    images, joints = obs(cfg, b=3)
    chunk = net(net.encode(images, joints))
    assert chunk.shape == (3, 10, 3)


@pytest.mark.parametrize(
    "variant,size",
    [("small", (16, 16)), ("small", (96, 96)), ("resnet18", (96, 96)), ("resnet18", (32, 40))],
)
def test_encoder_variants(variant: str, size: tuple[int, int]) -> None:
    cfg = tiny(
        image_size=size,
        encoder={
            "variant": variant,
            "width": 8,
            "group_size": 4,
            "num_keypoints": 4,
            "feature_dim": 12,
        },
    )
    enc = ImageEncoder(cfg.encoder, size)
    out = enc(torch.rand(2, 3, *size))
    assert out.shape == (2, 12)
    assert all(s >= 1 for s in enc.feature_map_size)
    # The spatial softmax reports positions: a keypoint can localise a bright square.
    assert torch.isfinite(out).all()


def test_spatial_softmax_localises() -> None:
    from diffusion_controller.policy.encoder import SpatialSoftmax

    ss = SpatialSoftmax(1, 5, 5, 1)
    with torch.no_grad():
        ss.proj.weight.fill_(50.0)
        ss.proj.bias.zero_()
    feat = torch.zeros(1, 1, 5, 5)
    feat[0, 0, 4, 0] = 1.0  # bottom-left
    xy = ss(feat)[0]
    assert xy[0] < -0.95 and xy[1] > 0.95


def test_per_camera_encoders_are_separate() -> None:
    cfg = tiny()
    net = build_net(cfg)
    assert len(net.obs_encoder.cameras) == 2
    images, joints = obs(cfg, b=1)
    base = net.encode(images, joints)
    swapped = net.encode(images.flip(2), joints)
    assert not torch.allclose(base, swapped)


def test_gradients_reach_every_parameter() -> None:
    for kind in ("diffusion", "regression"):
        cfg = tiny(kind)
        net = build_net(cfg)
        images, joints = obs(cfg)
        cond = net.encode(images, joints)
        out = (
            net(torch.randn(2, 8, 3), torch.tensor([1, 90]), cond)
            if kind == "diffusion"
            else net(cond)
        )
        out.square().mean().backward()
        missing = [n for n, p in net.named_parameters() if p.grad is None]
        assert not missing, missing


def test_state_dict_holds_only_learned_tensors() -> None:
    net = build_net(tiny())
    assert set(net.state_dict()) == {n for n, _ in net.named_parameters()}


def test_build_is_deterministic_under_a_seed() -> None:
    torch.manual_seed(3)
    a = build_net(tiny()).state_dict()
    torch.manual_seed(3)
    b = build_net(tiny()).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


# The TorchScript-based exporter (opset 17, what the Jetson's TensorRT 10.3 parses); torch >= 2.5
# names it with dynamo=False, older releases have only that exporter.
LEGACY = {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}


class _Encode(nn.Module):
    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, images: torch.Tensor, joints: torch.Tensor) -> torch.Tensor:
        return self.net.encode(images, joints)


@pytest.mark.parametrize("kind", ["diffusion", "regression"])
def test_exports_to_onnx_opset17_and_matches_onnxruntime(kind: str, tmp_path) -> None:
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime checks the exported graph")
    import warnings

    cfg = tiny(kind, cameras=["camera"])
    net = build_net(cfg).eval()
    images, joints = obs(cfg, b=1)
    with torch.no_grad():
        cond = net.encode(images, joints)
    x, t = torch.randn(1, 8, 3), torch.tensor([37], dtype=torch.long)
    enc_path, den_path = tmp_path / "enc.onnx", tmp_path / "den.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(
            _Encode(net),
            (images, joints),
            str(enc_path),
            opset_version=17,
            **LEGACY,
            input_names=["images", "joints"],
            output_names=["cond"],
        )
        if kind == "diffusion":
            torch.onnx.export(
                net,
                (x, t, cond),
                str(den_path),
                opset_version=17,
                **LEGACY,
                input_names=["sample", "timestep", "cond"],
                output_names=["out"],
            )
        else:
            torch.onnx.export(
                net,
                (cond,),
                str(den_path),
                opset_version=17,
                **LEGACY,
                input_names=["cond"],
                output_names=["out"],
            )
    enc = ort.InferenceSession(str(enc_path), providers=["CPUExecutionProvider"])
    got = enc.run(None, {"images": images.numpy(), "joints": joints.numpy()})[0]
    torch.testing.assert_close(torch.from_numpy(got), cond, rtol=1e-4, atol=1e-4)
    den = ort.InferenceSession(str(den_path), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        if kind == "diffusion":
            for step in (0, 37, 99):  # one graph for every timestep: t is an input, not a constant
                tt = torch.tensor([step])
                ref = net(x, tt, cond)
                got = den.run(
                    None, {"sample": x.numpy(), "timestep": tt.numpy(), "cond": cond.numpy()}
                )[0]
                torch.testing.assert_close(torch.from_numpy(got), ref, rtol=1e-4, atol=1e-4)
        else:
            got = den.run(None, {"cond": cond.numpy()})[0]
            torch.testing.assert_close(torch.from_numpy(got), net(cond), rtol=1e-4, atol=1e-4)
