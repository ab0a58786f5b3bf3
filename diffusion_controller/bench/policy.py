"""`diffusion-controller bench policy`: latency of one full inference per backend, and its error.

One inference = preprocessing + encoder once + N DDIM steps + unnormalisation, on random
observations (random pixels, joints inside the training range; never zeros). Each available
backend is timed over `--runs` calls after `--warmup` calls, round-robin with the others so that
background load on a shared machine hits every contender alike, and compared with

- "torch-eager-diffusers": the way the reference implementations run a Diffusion Policy: eager
  PyTorch under no_grad with a Python loop calling diffusers' DDIMScheduler.step, same weights,
  same step count (speedup_vs_eager is this row's p50 over the backend's p50);
- the torch reference backend on fixed noise and fixed observations: max_abs_err is the largest
  difference in the absolute action chunk, in radians.

Without --model a randomly initialised model at the cpu_default size is built in a temp dir, so
the benchmark runs before any model is trained. Speed goals live here, never in tests.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from diffusion_controller.report import format_table, write_json

EAGER = "torch-eager-diffusers"
COLUMNS = ("backend", "steps", "p50_ms", "p99_ms", "speedup_vs_eager", "max_abs_err")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("policy", help="inference latency per backend vs eager PyTorch + diffusers")
    p.add_argument("--model", help="model directory (default: random cpu_default model)")
    p.add_argument("--kind", choices=("diffusion", "regression"), default="diffusion",
                   help="kind of the random model when --model is not given")
    p.add_argument("--preset", choices=("cpu", "paper"), default="cpu",
                   help="size of the random model when --model is not given")
    p.add_argument("--steps", type=int, default=8, help="DDIM steps per inference (default 8)")
    p.add_argument("--runs", type=int, default=50, help="timed inferences per backend (>= 50)")
    p.add_argument("--warmup", type=int, default=5, help="untimed inferences first")
    p.add_argument("--backends", default=None,
                   help="comma-separated backend specs (default: all available), e.g. "
                        "torch,onnxruntime,onnxruntime:cuda,tensorrt")
    p.add_argument("--threads", type=int, default=1,
                   help="CPU threads for every backend and the baseline (default 1)")
    p.add_argument("--fp16", action="store_true", help="FP16 on the GPU backends that support it")
    p.add_argument("--no-eager", action="store_true", help="skip the eager diffusers baseline")
    p.add_argument("--json", help="write the rows and the setup to this file")
    p.set_defaults(func=run)


def _percentiles(times_s: Sequence[float]) -> tuple[float, float]:
    arr = np.asarray(times_s) * 1e3
    return float(np.percentile(arr, 50)), float(np.percentile(arr, 99))


class EagerDiffusersBaseline:
    """Eager PyTorch + diffusers DDIMScheduler, written the way the reference code runs it."""

    def __init__(self, model_dir: str, threads: int) -> None:
        import torch
        from diffusers import DDIMScheduler

        from diffusion_controller.policy.artifact import load_artifact

        torch.set_num_threads(threads)
        self.torch = torch
        art = load_artifact(model_dir)
        self.net, self.cfg, self.norms = art.net.eval(), art.config, art.normalizers
        d = self.cfg.diffusion
        self.scheduler = DDIMScheduler(
            num_train_timesteps=d.num_train_timesteps, beta_schedule=d.beta_schedule,
            beta_start=d.beta_start, beta_end=d.beta_end, clip_sample=d.clip_sample,
            clip_sample_range=d.clip_sample_range, prediction_type=d.prediction_type,
            set_alpha_to_one=True, steps_offset=0,
        )

    def infer(self, obs: Any, steps: int, noise: np.ndarray) -> np.ndarray:
        torch = self.torch
        cfg = self.cfg
        with torch.no_grad():
            imgs = np.stack([obs.images[c] for c in cfg.cameras], axis=1)  # [To, Ncam, H, W, 3]
            images = torch.from_numpy(imgs).permute(0, 1, 4, 2, 3).float().div(255.0)[None]
            joints = torch.from_numpy(
                self.norms["joints"].normalize(np.asarray(obs.joints, np.float32)))[None]
            if cfg.kind == "regression":
                x = self.net(self.net.encode(images, joints))
            else:
                cond = self.net.encode(images, joints)
                x = torch.from_numpy(noise.reshape(1, cfg.horizon, cfg.action_dim))
                self.scheduler.set_timesteps(steps)
                for t in self.scheduler.timesteps:
                    out = self.net(x, t.reshape(1), cond)
                    x = self.scheduler.step(out, t, x, eta=0.0).prev_sample
        return self.norms["actions"].unnormalize(x[0].double().numpy())


def run(args: argparse.Namespace) -> int:
    from diffusion_controller.runtime.loading import available_backends

    if args.runs < 1 or args.warmup < 0 or args.steps < 1 or args.threads < 1:
        raise SystemExit("bench policy: --runs, --steps and --threads must be >= 1, --warmup >= 0")
    if args.runs < 50:
        print(f"note: {args.runs} runs; p99 needs >= 50 to mean anything")
    tmp = None
    model_dir = args.model
    if model_dir is None:
        from diffusion_controller.runtime.random_model import make_random_artifact

        tmp = tempfile.TemporaryDirectory(prefix="dc-bench-")
        model_dir = make_random_artifact(os.path.join(tmp.name, "model"), kind=args.kind,
                                         preset=args.preset)
    specs = ([s.strip() for s in args.backends.split(",") if s.strip()] if args.backends
             else available_backends())
    try:
        rows, setup = _bench(model_dir, specs, args)
    finally:
        if tmp is not None:
            tmp.cleanup()
    what = (f"{args.steps} DDIM steps" if setup["kind"] == "diffusion" else "one pass (no steps)")
    title = (f"bench policy: {setup['kind']} model, {what}, {args.runs} runs, "
             f"{args.threads} CPU thread(s); max_abs_err in rad vs the torch reference")
    print(format_table(rows, COLUMNS, digits=3, title=title))
    for name, err in setup["errors"].items():
        print(f"{name}: skipped ({err})")
    if args.json:
        write_json(args.json, {"rows": rows, "setup": setup})
    return 0


def _bench(model_dir: str, specs: list[str], args: argparse.Namespace
           ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    from diffusion_controller.policy.artifact import load_config
    from diffusion_controller.runtime.loading import load_backend

    cfg, _, meta = load_config(model_dir)
    steps = args.steps
    rng = np.random.default_rng(12345)
    h, j = cfg.horizon, cfg.action_dim
    errors: dict[str, str] = {}

    # Fixed observations and noise: the same for every backend and the baseline.
    ref = None
    if _torch_available():
        ref = load_backend(model_dir, "torch", threads=args.threads)
    first = ref or load_backend(model_dir, specs[0], threads=args.threads)
    observations = [first.random_observation(rng, stamp=float(i)) for i in range(8)]
    noises = [rng.standard_normal((h, j), dtype=np.float32) for _ in observations]
    check_idx = range(3)
    reference = None
    if ref is not None:
        reference = [ref.infer(observations[i], steps=steps, noise=noises[i]).actions
                     for i in check_idx]

    # Contenders: (row name, one call on observation i, the chunks for the error check).
    contenders: list[tuple[str, Callable[[int], Any], list[np.ndarray]]] = []
    if not args.no_eager and _torch_available():
        try:
            base = EagerDiffusersBaseline(model_dir, args.threads)
        except ImportError as exc:
            errors[EAGER] = f"diffusers not installed ({exc})"
        else:
            contenders.append((
                EAGER, lambda i, b=base: b.infer(observations[i % 8], steps, noises[i % 8]),
                [base.infer(observations[i], steps, noises[i]) for i in check_idx]))
    for spec in specs:
        try:
            backend = ref if (spec == "torch" and ref is not None) else load_backend(
                model_dir, spec, threads=args.threads, fp16=args.fp16 and spec != "torch")
        except Exception as exc:  # a missing provider or library: report it, bench the rest
            errors[spec] = str(exc).splitlines()[0][:200]
            continue
        name = spec if ":" in spec or backend.device == "cpu" else f"{spec}:{backend.device}"
        contenders.append((
            name,
            lambda i, b=backend: b.infer(observations[i % 8], steps=steps, noise=noises[i % 8]),
            [backend.infer(observations[i], steps=steps, noise=noises[i]).actions
             for i in check_idx]))

    # Round-robin timing: on a shared machine every contender sees the same background load.
    times: dict[str, list[float]] = {name: [] for name, _, _ in contenders}
    for i in range(args.warmup):
        for _, call, _ in contenders:
            call(i)
    for i in range(args.runs):
        for name, call, _ in contenders:
            t = time.perf_counter()
            call(i)
            times[name].append(time.perf_counter() - t)

    eager_p50 = _percentiles(times[EAGER])[0] if EAGER in times else None
    rows: list[dict[str, Any]] = []
    for name, _, chunks in contenders:
        p50, p99 = _percentiles(times[name])
        rows.append({
            "backend": name, "steps": steps if cfg.kind == "diffusion" else 0,
            "p50_ms": p50, "p99_ms": p99,
            "speedup_vs_eager": (eager_p50 / p50) if eager_p50 else None,
            "max_abs_err": _max_err(reference, chunks),
        })

    setup = {
        "model_dir": model_dir if args.model else "(random init)",
        "kind": cfg.kind,
        "preset": None if args.model else args.preset,
        "num_params": meta.get("weights", {}).get("num_params"),
        "horizon": h, "action_dim": j, "image_size": list(cfg.image_size),
        "n_obs_steps": cfg.n_obs_steps, "cameras": list(cfg.cameras),
        "steps": steps, "runs": args.runs, "warmup": args.warmup, "threads": args.threads,
        "fp16": bool(args.fp16), "machine": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(), "python": platform.python_version(),
        "max_abs_err_units": "rad (absolute joint positions)",
        "errors": errors,
    }
    return rows, setup


def _max_err(reference: list[np.ndarray] | None, got: list[np.ndarray]) -> float | None:
    if reference is None:
        return None
    pairs = zip(got, reference, strict=True)
    return float(max(np.max(np.abs(np.asarray(g) - r)) for g, r in pairs))


def _torch_available() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True
