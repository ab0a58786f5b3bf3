"""Backend interface: input validation, discovery, the shared DDIM plan, result assembly."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diffusion_controller.runtime.backend import MAX_SAMPLES, InferenceError, Observation
from diffusion_controller.runtime.loading import available_backends, load_backend, parse_backend
from diffusion_controller.runtime.random_model import make_random_artifact

torch.set_num_threads(1)
TINY = dict(image_size=(16, 16), unet={"down_dims": [16, 32], "kernel_size": 3, "n_groups": 4,
                                       "step_embed_dim": 16})


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory):
    d = make_random_artifact(tmp_path_factory.mktemp("m") / "model", **TINY)
    return load_backend(d, "torch", threads=1)


@pytest.fixture()
def obs(backend) -> Observation:
    return backend.random_observation(np.random.default_rng(0), stamp=5.0)


def test_result_shapes_and_timings(backend, obs) -> None:
    cfg = backend.config
    r = backend.infer(obs, seed=1)
    assert r.actions.shape == (cfg.horizon, cfg.action_dim) and r.actions.dtype == np.float64
    assert r.samples is None and r.spread is None and r.stamp == 5.0
    assert r.steps == cfg.diffusion.inference_steps and r.backend == "torch"
    assert set(r.timings_ms) == {"preprocess", "encode", "denoise", "total"}
    assert all(v >= 0 for v in r.timings_ms.values())
    # clip_sample keeps normalised actions in [-1, 1]: inside the training range
    lo, hi = backend.normalizers["actions"].low, backend.normalizers["actions"].high
    assert np.all(r.actions >= lo - 1e-6) and np.all(r.actions <= hi + 1e-6)
    np.testing.assert_array_equal(r.actions, backend.infer(obs, seed=1).actions)
    assert not np.array_equal(r.actions, backend.infer(obs, seed=2).actions)


def _bad_obs(obs: Observation, **kw) -> Observation:
    return Observation(images=kw.get("images", obs.images), joints=kw.get("joints", obs.joints),
                       stamp=kw.get("stamp", obs.stamp))


def test_observation_errors(backend, obs) -> None:
    img = obs.images["camera"]
    cases = [
        (dict(images={}), "cameras"),
        (dict(images={"camera": img, "wrist": img}), "unknown"),
        (dict(images={"camera": img.astype(np.float32)}), "uint8"),
        (dict(images={"camera": img[:, :8]}), "model size"),
        (dict(images={"camera": img[:1]}), "To="),
        (dict(joints=obs.joints[:, :3]), "joints must have shape"),
        (dict(joints=np.where(np.eye(*obs.joints.shape) > 0, np.nan, obs.joints)), "NaN"),
        (dict(joints=np.full(obs.joints.shape, np.inf)), "NaN or Inf"),
        (dict(joints=np.array([["a"] * 7] * 2)), "float"),
        (dict(stamp=float("nan")), "stamp"),
        (dict(stamp="now"), "stamp"),
    ]
    for kw, match in cases:
        with pytest.raises(ValueError, match=match):
            backend.infer(_bad_obs(obs, **kw))
    with pytest.raises(ValueError, match="Observation"):
        backend.infer({"images": obs.images})


def test_option_errors(backend, obs) -> None:
    h, j = backend.config.horizon, backend.config.action_dim
    ok = np.zeros((h, j))
    cases = [
        (dict(steps=0), "steps"),
        (dict(steps=101), "steps"),
        (dict(steps=2.5), "steps"),
        (dict(eta=-0.1), "eta"),
        (dict(eta=float("nan")), "eta"),
        (dict(num_samples=0), "num_samples"),
        (dict(num_samples=MAX_SAMPLES + 1), "num_samples"),
        (dict(num_samples=True), "num_samples"),
        (dict(seed=-1), "seed"),
        (dict(warm_start=ok[:-1]), "warm_start must have shape"),
        (dict(warm_start=ok + np.nan), "warm_start contains NaN"),
        (dict(warm_start=ok, warm_start_strength=0.0), "warm_start_strength"),
        (dict(warm_start=ok, warm_start_strength=1.5), "warm_start_strength"),
        (dict(warm_start_strength=0.5), "without a warm_start"),
        (dict(prefix=np.zeros((h + 1, j))), "prefix"),
        (dict(prefix=np.zeros((2, j + 1))), "prefix"),
        (dict(prefix=np.full((2, j), np.inf)), "prefix contains NaN"),
        (dict(noise=np.zeros((2, h, j))), "noise must be"),
        (dict(noise=np.full((h, j), np.nan)), "noise contains NaN"),
    ]
    for kw, match in cases:
        with pytest.raises(ValueError, match=match):
            backend.infer(obs, **kw)


def test_prefix_comes_back_exactly_and_empty_prefix_is_none(backend, obs) -> None:
    ref = backend.infer(obs, seed=0)
    prefix = ref.actions[:3] + 0.01
    r = backend.infer(obs, seed=0, prefix=prefix)
    np.testing.assert_array_equal(r.actions[:3], prefix)
    empty = backend.infer(obs, seed=0, prefix=np.zeros((0, backend.config.action_dim)))
    np.testing.assert_array_equal(empty.actions, ref.actions)


def test_samples_spread_and_medoid(backend, obs) -> None:
    r = backend.infer(obs, seed=3, num_samples=5)
    assert r.samples.shape == (5, *r.actions.shape)
    assert any(np.array_equal(r.actions, s) for s in r.samples)  # a real sample, not a mean
    n = backend.config.n_action_steps
    assert r.spread == pytest.approx(float(np.max(np.std(r.samples[:, :n], axis=0))))
    assert r.spread > 0
    # the samples are the chains of their own noise: sample k equals a 1-sample run on noise k
    plan = backend.make_plan(num_samples=5, seed=3)
    one = backend.infer(obs, noise=plan.x_noise[2])
    np.testing.assert_allclose(one.actions, r.samples[2], atol=1e-5)


def test_warm_start_runs_fewer_steps(backend, obs) -> None:
    prev = backend.infer(obs, seed=0).actions
    r = backend.infer(obs, seed=0, steps=8, warm_start=prev, warm_start_strength=0.25)
    assert r.steps == 2
    assert backend.infer(obs, seed=0, steps=8, warm_start=prev).steps == 4  # default 0.5


def test_plan_is_the_ddim_schedule(backend) -> None:
    plan = backend.make_plan(steps=4, seed=0, eta=0.5)
    core = backend.core
    assert [p[0] for p in plan.pairs] == core.timesteps(4)
    t, t_prev = plan.pairs[-1]
    assert t_prev < 0
    row = plan.schedule[-1]
    assert row[0] == t and row[3] == pytest.approx(1.0)  # last step lands on the clean sample
    a = core.alpha_bar(plan.pairs[0][0])
    assert plan.schedule[0, 1] == pytest.approx(a**0.5, rel=1e-6)
    # eta > 0 adds noise on every step but the last (its variance is 0: it lands on x0)
    assert np.all(plan.schedule[:-1, 5] > 0) and plan.schedule[-1, 5] == 0
    assert np.any(plan.step_noise != 0)
    zero = backend.make_plan(steps=4, seed=0, eta=0.0)
    assert np.all(zero.schedule[:, 5] == 0) and not np.any(zero.step_noise)


def test_non_finite_network_output_is_an_inference_error(tmp_path, obs) -> None:
    d = make_random_artifact(tmp_path / "m", **TINY)
    b = load_backend(d, "torch")
    with torch.no_grad():
        b.net.unet.head[-1].bias.fill_(float("nan"))
    with pytest.raises(InferenceError, match="NaN"):
        b.infer(obs, seed=0)


def test_discovery_and_parsing() -> None:
    avail = available_backends()
    assert "torch" in avail and "onnxruntime" in avail
    assert parse_backend("onnxruntime:cuda") == ("onnxruntime", "cuda")
    assert parse_backend("onnxruntime:cuda", "tensorrt") == ("onnxruntime", "tensorrt")
    assert parse_backend("torch") == ("torch", None)
    with pytest.raises(ValueError, match="unknown backend"):
        parse_backend("tflite")


def test_load_errors(tmp_path, backend) -> None:
    with pytest.raises(ValueError, match="unknown backend"):
        load_backend(backend.model_dir, "jax")
    with pytest.raises(ValueError, match="threads"):
        load_backend(backend.model_dir, "torch", threads=0)
    with pytest.raises(ValueError, match="fp16"):
        load_backend(backend.model_dir, "onnxruntime", fp16=True)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA"):
            load_backend(backend.model_dir, "torch:cuda")
    from diffusion_controller.policy.artifact import ArtifactError

    with pytest.raises(ArtifactError, match="does not exist"):
        load_backend(tmp_path / "missing", "torch")


def test_regression_kind_ignores_sampling_options(tmp_path) -> None:
    d = make_random_artifact(tmp_path / "reg", kind="regression", **TINY)
    b = load_backend(d, "torch")
    obs = b.random_observation(np.random.default_rng(0))
    r = b.infer(obs, steps=3, seed=5)
    assert r.steps == 0 and r.samples is None
    np.testing.assert_array_equal(r.actions, b.infer(obs, seed=9).actions)
    prefix = r.actions[:2] + 0.05
    np.testing.assert_array_equal(b.infer(obs, prefix=prefix).actions[:2], prefix)
    with pytest.raises(ValueError, match="warm_start contains NaN"):  # still checked
        b.infer(obs, warm_start=np.full(r.actions.shape, np.nan))


def test_auto_with_fp16_runs_fp32_without_tensorrt(backend, caplog) -> None:
    """config/arm.yaml's `fp16: true, backend: auto` must configure without TensorRT."""
    from diffusion_controller.runtime.loading import _auto

    name, dev = _auto(backend.model_dir)
    if name == "tensorrt" or (name, dev) == ("onnxruntime", "tensorrt"):
        pytest.skip("TensorRT is present: fp16 is honoured there")
    with caplog.at_level("WARNING"):
        b = load_backend(backend.model_dir, "auto", fp16=True)
    assert getattr(b, "precision", "fp32") == "fp32"
    assert "running fp32" in caplog.text


def test_warmup_at_the_configured_samples_and_first_inference_in_status(tmp_path) -> None:
    """Warm-up runs the batch the loop runs; the status reports the first inference's time."""
    d = make_random_artifact(tmp_path / "model", **TINY)
    b = load_backend(d, "torch", threads=1)
    assert b.status()["first_inference_ms"] == -1.0  # nothing ran yet
    shapes: list[int] = []
    plan = b.make_plan

    def recording_plan(**kw):
        shapes.append(kw["num_samples"])
        return plan(**kw)

    b.make_plan = recording_plan  # type: ignore[method-assign]
    b.warmup(2, steps=2, num_samples=4)
    assert shapes == [4, 4]
    status = b.status()
    assert status["first_inference_ms"] > 0.0 and status["backend"] == "torch"
    first = status["first_inference_ms"]
    b.infer(b.random_observation(np.random.default_rng(1)), steps=2)
    assert b.status()["first_inference_ms"] == first  # the first one, not the latest


def test_num_samples_above_the_backend_limit_is_refused(backend, obs) -> None:
    limit = backend.max_samples
    try:
        backend.max_samples = 3
        with pytest.raises(ValueError, match="num_samples 4 exceeds the 3"):
            backend.infer(obs, num_samples=4)
        assert backend.infer(obs, num_samples=3, steps=2).samples.shape[0] == 3
    finally:
        backend.max_samples = limit


def test_regression_chunks_stay_in_the_demonstrations_range(tmp_path) -> None:
    """As the diffusion sampler's clip: an unbounded regression head that overshoots (here every
    output parameter pushed up) yields chunks at the action range's edge, never beyond it."""
    d = make_random_artifact(tmp_path / "reg", kind="regression", **TINY)
    b = load_backend(d, "torch")
    with torch.no_grad():
        for p in b.net.parameters():
            p.add_(0.5)
    obs = b.random_observation(np.random.default_rng(0))
    actions = b.infer(obs).actions
    norm = b.normalizers["actions"]
    ones = np.ones(actions.shape[1])
    lo, hi = norm.unnormalize(-ones), norm.unnormalize(ones)
    assert np.all(actions >= lo - 1e-9) and np.all(actions <= hi + 1e-9)
    assert np.any(np.isclose(actions, hi) | np.isclose(actions, lo))  # it did overshoot
