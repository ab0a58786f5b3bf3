"""Every CPU backend against the torch reference (policy's DDIMSampler) on fixed noise and random
observations: FP32 parity to 1e-4 rad, for step counts, warm start, prefix, K samples, regression.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diffusion_controller.policy.ddim import DDIMCore
from diffusion_controller.policy.preprocess import observation_images
from diffusion_controller.runtime.loading import load_backend
from diffusion_controller.runtime.random_model import make_random_artifact

torch.set_num_threads(1)
TOL = 1e-4  # absolute, radians
SMALL = dict(image_size=(32, 32), unet={"down_dims": [32, 64, 128], "kernel_size": 5,
                                        "n_groups": 8, "step_embed_dim": 32})
CPU_BACKENDS = ["onnxruntime"]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("models")
    return {kind: make_random_artifact(root / kind, kind=kind, seed=3, **SMALL)
            for kind in ("diffusion", "regression")}


@pytest.fixture(scope="module")
def pair(models):
    ref = load_backend(models["diffusion"], "torch", threads=1)
    return ref, {name: load_backend(models["diffusion"], name, threads=1)
                 for name in CPU_BACKENDS}


def _observations(backend, n: int = 3) -> list:
    rng = np.random.default_rng(42)
    return [backend.random_observation(rng, stamp=float(i)) for i in range(n)]


@pytest.mark.parametrize("name", CPU_BACKENDS)
@pytest.mark.parametrize("steps", [1, 4, 8])
def test_plain_sampling_matches_reference(pair, name: str, steps: int) -> None:
    ref, others = pair
    other = others[name]
    for i, obs in enumerate(_observations(ref)):
        a = ref.infer(obs, steps=steps, seed=i)
        b = other.infer(obs, steps=steps, seed=i)
        assert a.steps == b.steps == steps
        assert np.max(np.abs(a.actions - b.actions)) <= TOL


@pytest.mark.parametrize("name", CPU_BACKENDS)
def test_fixed_noise_matches_reference(pair, name: str) -> None:
    ref, others = pair
    cfg = ref.config
    noise = np.random.default_rng(7).standard_normal((cfg.horizon, cfg.action_dim))
    obs = _observations(ref, 1)[0]
    a = ref.infer(obs, noise=noise)
    b = others[name].infer(obs, noise=noise)
    assert np.max(np.abs(a.actions - b.actions)) <= TOL


@pytest.mark.parametrize("name", CPU_BACKENDS)
@pytest.mark.parametrize("strength", [0.25, 0.5, 1.0])
def test_warm_start_matches_reference(pair, name: str, strength: float) -> None:
    ref, others = pair
    obs = _observations(ref, 2)
    prev = ref.infer(obs[0], seed=0).actions
    a = ref.infer(obs[1], steps=8, seed=1, warm_start=prev, warm_start_strength=strength)
    b = others[name].infer(obs[1], steps=8, seed=1, warm_start=prev,
                           warm_start_strength=strength)
    assert a.steps == b.steps == max(1, round(strength * 8))
    assert np.max(np.abs(a.actions - b.actions)) <= TOL


@pytest.mark.parametrize("name", CPU_BACKENDS)
@pytest.mark.parametrize("k", [1, 3, 16])
def test_prefix_is_honoured_exactly_and_matches_reference(pair, name: str, k: int) -> None:
    ref, others = pair
    obs = _observations(ref, 2)
    prev = ref.infer(obs[0], seed=0).actions
    prefix = prev[:k]
    a = ref.infer(obs[1], seed=4, prefix=prefix, warm_start=prev)
    b = others[name].infer(obs[1], seed=4, prefix=prefix, warm_start=prev)
    np.testing.assert_array_equal(a.actions[:k], prefix)
    np.testing.assert_array_equal(b.actions[:k], prefix)
    assert np.max(np.abs(a.actions - b.actions)) <= TOL


@pytest.mark.parametrize("name", CPU_BACKENDS)
def test_k_samples_match_reference(pair, name: str) -> None:
    ref, others = pair
    obs = _observations(ref, 1)[0]
    a = ref.infer(obs, seed=11, num_samples=4, steps=4)
    b = others[name].infer(obs, seed=11, num_samples=4, steps=4)
    assert a.samples.shape == b.samples.shape == (4, ref.config.horizon, ref.config.action_dim)
    assert np.max(np.abs(a.samples - b.samples)) <= TOL
    assert a.spread == pytest.approx(b.spread, abs=TOL)
    prev = a.actions
    a = ref.infer(obs, seed=12, num_samples=3, warm_start=prev, prefix=prev[:2])
    b = others[name].infer(obs, seed=12, num_samples=3, warm_start=prev, prefix=prev[:2])
    assert np.max(np.abs(a.samples - b.samples)) <= TOL
    assert np.all(b.samples[:, :2] == prev[:2])


@pytest.mark.parametrize("name", CPU_BACKENDS)
def test_eta_noise_path_matches_the_shared_ddim_loop(pair, name: str) -> None:
    """With eta > 0 the torch sampler draws its own step noise, so the graph is checked against
    policy/ddim.py's loop driven by the torch network and the plan's noise instead."""
    ref, others = pair
    obs = _observations(ref, 1)[0]
    got = others[name].infer(obs, steps=4, seed=5, eta=0.7).actions
    plan = ref.make_plan(steps=4, seed=5, eta=0.7)
    images = torch.from_numpy(observation_images(obs.images, ref.config.cameras)[None])
    joints = torch.from_numpy(
        ref.normalizers["joints"].normalize(obs.joints).astype(np.float32)[None])
    noise = iter(torch.from_numpy(plan.step_noise))
    with torch.no_grad():
        cond = ref.net.encode(images, joints)
        x = DDIMCore(ref.config.diffusion).run(
            lambda xt, t: ref.net(xt, torch.full((xt.shape[0],), t), cond),
            torch.from_numpy(plan.x_init), plan.pairs, eta=0.7, randn=lambda: next(noise))
    want = ref.normalizers["actions"].unnormalize(x[0].double().numpy())
    assert np.max(np.abs(got - want)) <= TOL
    assert np.max(np.abs(got - others[name].infer(obs, steps=4, seed=5).actions)) > TOL


@pytest.mark.parametrize("name", CPU_BACKENDS)
def test_regression_kind_matches_reference(models, name: str) -> None:
    ref = load_backend(models["regression"], "torch", threads=1)
    other = load_backend(models["regression"], name, threads=1)
    for obs in _observations(ref):
        assert np.max(np.abs(ref.infer(obs).actions - other.infer(obs).actions)) <= TOL
