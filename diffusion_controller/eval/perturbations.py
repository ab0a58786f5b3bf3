"""The named perturbations of an evaluation run and what each one asks of the simulator or of
the controller.

Each sensor or scene perturbation maps to a sim.perturbation.Perturbation for a given task; the
obstacle shift depends on the task (sideways to the start-to-target line, the side drawn from the
seed) and exists only where the task has an obstacle (not pick_place), the others do not depend on
it. The ablations (`warm_start_off`, `inpainting_off`) leave the simulator alone and switch off one
of the sampler's live parameters on the controller for the episode: what the policy's chunk-to-chunk
consistency owes to each. The magnitudes are fixed here, and written into every run's config.json,
so that runs compare.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from diffusion_controller.sim.perturbation import Perturbation
from diffusion_controller.sim.task import TaskSpec

PERTURBATIONS = (
    "none", "delay", "noise", "obstacle_shift", "dropout", "blind", "warm_start_off",
    "inpainting_off",
)  # fmt: skip
# Controller parameters (LIVE ones, settings/controller.py) an ablation sets for its episodes;
# every other episode of a run that has one gets the policy's own values back.
CONTROLLER_ABLATIONS: dict[str, dict[str, Any]] = {
    "warm_start_off": {"warm_start": False},  # every chunk denoised from pure noise
    "inpainting_off": {"prefix_steps": 0},  # no action of a new chunk pinned to the executing one
}
# Perturbations that make no sense for a task: moving an obstacle the task does not have.
_REFUSED: dict[str, tuple[str, ...]] = {"pick_place": ("obstacle_shift",)}

IMAGE_DELAY_S = 0.15  # a slow camera pipeline: 2 frames at 15 Hz
JOINT_STATE_DELAY_S = 0.02  # a congested joint-state link: 2 ticks
JOINT_NOISE_RAD = 0.005  # about 0.3 degrees, well above an encoder's, below tracking error limits
IMAGE_NOISE_LEVELS = 12.0  # std in 0..255 intensity levels
IMAGE_DROP_PROB = 0.3
SHIFT_M = 0.03  # the obstacle jumps this far sideways ...
SHIFT_AFTER_START_S = 0.8  # ... this long after the controller is enabled


def parse_perturbations(text: str) -> list[str]:
    """'none,delay' -> ['none', 'delay']; unknown names raise ValueError listing the known ones."""
    names = [t.strip() for t in str(text).split(",") if t.strip()]
    if not names:
        raise ValueError(f"no perturbation given; choose from {', '.join(PERTURBATIONS)}")
    unknown = [n for n in names if n not in PERTURBATIONS]
    if unknown:
        raise ValueError(
            f"unknown perturbation(s) {', '.join(unknown)}; choose from {', '.join(PERTURBATIONS)}"
        )
    return list(dict.fromkeys(names))  # keep order, drop repeats


def refused_for(task: str) -> tuple[str, ...]:
    """The perturbations that do not apply to `task`."""
    return _REFUSED.get(task, ())


def controller_values(names: list[str], name: str, own: dict[str, Any]) -> dict[str, Any]:
    """The controller parameters to set for an episode under perturbation `name`, in a run whose
    perturbations are `names`: every parameter any of the run's ablations touches, at the
    ablation's value for its own episodes and at the policy's own value (`own`, the controller's
    parameter file, else the setting's default) otherwise, so nothing leaks into the next episode.
    Empty when the run has no ablation, so such a run sets nothing new."""
    from diffusion_controller.settings.controller import SPECS

    keys = dict.fromkeys(k for n in names for k in CONTROLLER_ABLATIONS.get(n, {}))
    values = {k: own.get(k, SPECS[k].default) for k in keys}
    values.update(CONTROLLER_ABLATIONS.get(name, {}))
    return values


def shift_for(spec: TaskSpec, distance: float = SHIFT_M) -> tuple[float, float]:
    """Sideways obstacle jump for this task: perpendicular to the start-to-target line, to the
    left or the right by a coin drawn from the seed (both passages get narrowed equally often)."""
    _, left = spec.axis()
    sign = 1.0 if np.random.default_rng([int(spec.seed), 0x5417]).random() < 0.5 else -1.0
    d = sign * distance * left
    return float(d[0]), float(d[1])


def perturbation_for(name: str, spec: TaskSpec, start_delay: float) -> Perturbation:
    """The simulator settings for perturbation `name` on task `spec`.

    `start_delay` is the sim time between the reset and the controller's enable, so that the
    obstacle moves a fixed time after the policy starts, whatever the settling time.
    """
    if name == "none" or name in CONTROLLER_ABLATIONS:  # the ablations leave the sim alone
        return Perturbation()
    if name == "delay":
        return Perturbation(image_delay=IMAGE_DELAY_S, joint_state_delay=JOINT_STATE_DELAY_S)
    if name == "noise":
        return Perturbation(joint_noise=JOINT_NOISE_RAD, image_noise=IMAGE_NOISE_LEVELS)
    if name == "dropout":
        return Perturbation(image_drop_prob=IMAGE_DROP_PROB)
    if name == "blind":  # every frame of the episode is its first: no visual feedback
        return Perturbation(image_freeze=1.0)
    if name == "obstacle_shift":
        return Perturbation(
            obstacle_shift=shift_for(spec), obstacle_shift_time=start_delay + SHIFT_AFTER_START_S
        )
    raise ValueError(f"unknown perturbation {name!r}; choose from {', '.join(PERTURBATIONS)}")


def describe() -> dict[str, dict[str, Any]]:
    """The fixed magnitudes, for config.json."""
    return {
        "none": {},
        "delay": {"image_delay_s": IMAGE_DELAY_S, "joint_state_delay_s": JOINT_STATE_DELAY_S},
        "noise": {"joint_noise_rad": JOINT_NOISE_RAD, "image_noise_levels": IMAGE_NOISE_LEVELS},
        "obstacle_shift": {"sideways_m": SHIFT_M, "after_start_s": SHIFT_AFTER_START_S},
        "dropout": {"image_drop_prob": IMAGE_DROP_PROB},
        "blind": {"image_freeze": 1.0},
        **{name: {"controller": dict(values)} for name, values in CONTROLLER_ABLATIONS.items()},
    }
