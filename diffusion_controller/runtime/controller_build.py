"""Loading the model for the controller: the artifact checked, then the backend, in a child process
or in this one, warmed up. Every failure is a `BuildError` whose message is what an operator needs
to read (it becomes the configure failure on /diagnostics), never a bare traceback.

The order is the cheap checks first: the settings against the table (settings/checks.py), the
path, the artifact's config (no torch), the settings against that model, and only then the
backend, which can take seconds to load and warm up.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from typing import Any

from diffusion_controller.settings import checks


class BuildError(RuntimeError):
    """The controller cannot be built; the message is what the operator needs to read."""


def model_facts(cfg: Any) -> checks.ModelFacts:
    """What a model (its PolicyConfig) imposes on the settings."""
    return checks.ModelFacts(
        horizon=cfg.horizon, action_dt=cfg.action_dt,
        num_train_timesteps=cfg.diffusion.num_train_timesteps,
        joint_names=tuple(cfg.joint_names), cameras=tuple(cfg.cameras))


def load_model(values: Mapping[str, Any]) -> tuple[Any, Any]:
    """(PolicyConfig, loaded and warmed-up backend) for `model_path`; BuildError says why not."""
    from diffusion_controller.policy.artifact import ArtifactError, load_config

    v = values
    errors = checks.validate(v)
    if errors:
        raise BuildError("invalid parameters: " + "; ".join(errors))
    path = str(v["model_path"])
    if not path:
        raise BuildError("model_path is empty: set it to a model artifact directory")
    if not os.path.exists(path):
        raise BuildError(f"model_path '{path}' does not exist")
    if not os.path.isdir(path):
        raise BuildError(f"model_path '{path}' is not a directory")
    try:
        cfg, _, _ = load_config(path)
    except ArtifactError as exc:
        raise BuildError(f"artifact corrupt: {exc}") from exc
    errors = checks.check_against_model(v, model_facts(cfg))
    if errors:
        raise BuildError("parameters do not fit the model: " + "; ".join(errors))
    if v["inference_mode"] == "process":
        return cfg, _start_inference_process(path, v, int(v["cpu_affinity"]))
    return cfg, _load_in_process(path, v)


def _load_in_process(path: str, v: Mapping[str, Any]) -> Any:
    """The backend in this process (`inference_mode: thread`), warmed up."""
    from diffusion_controller.policy.artifact import ArtifactError
    from diffusion_controller.runtime.loading import load_backend

    try:
        backend = load_backend(
            path, backend=v["backend"], fp16=bool(v["fp16"]),
            cache_dir=v["engine_cache_dir"] or None,
            threads=int(v["inference_threads"]) or None)
    except ArtifactError as exc:
        raise BuildError(f"artifact corrupt: {exc}") from exc
    except (ValueError, RuntimeError, OSError, ImportError) as exc:
        raise BuildError(f"cannot load the model with backend '{v['backend']}': {exc}") from exc
    try:
        backend.warmup(int(v["warmup_runs"]), steps=int(v["ddim_steps"]),
                       num_samples=int(v["num_samples"]))
    except Exception as exc:
        close = getattr(backend, "close", None)
        if close is not None:
            close()
        raise BuildError(f"model warm-up failed: {type(exc).__name__}: {exc}") from exc
    return backend


def _start_inference_process(path: str, v: Mapping[str, Any], affinity: int) -> Any:
    """The model in a child process; its load errors become the build failure."""
    from diffusion_controller.runtime.inference_process import ProcessBackend

    cpus = None
    if affinity >= 0:  # keep the network off the control loop's core when there is another
        with contextlib.suppress(AttributeError, OSError):
            cpus = sorted(set(os.sched_getaffinity(0)) - {affinity}) or None
    backend = ProcessBackend(
        path, backend=str(v["backend"]), fp16=bool(v["fp16"]),
        cache_dir=v["engine_cache_dir"] or None,
        threads=int(v["inference_threads"]) or None,
        timeout=float(v["inference_timeout"]), warmup_runs=int(v["warmup_runs"]),
        warmup_steps=int(v["ddim_steps"]), warmup_samples=int(v["num_samples"]), cpus=cpus)
    try:
        backend.start()
    except Exception as exc:
        backend.close()
        text = str(exc)
        if "ArtifactError" in text:
            raise BuildError(f"artifact corrupt: {text}") from exc
        raise BuildError(f"cannot load the model with backend '{v['backend']}' in the "
                         f"inference process: {text}") from exc
    return backend

