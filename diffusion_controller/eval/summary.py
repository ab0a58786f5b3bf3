"""The run's summary from its episode rows: one block of fields per policy (and per perturbation
within it), the baseline beside the primary policy, and the rows of the stdout table. The rows come
from eval/metrics.episode_result; nothing here needs ROS.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from diffusion_controller.eval.metrics import EpisodeResult, finite_percentile


def _rate(values: Sequence[bool]) -> float:
    return float(np.mean(values)) if len(values) else math.nan


def group_summary(results: Sequence[EpisodeResult]) -> dict[str, Any]:
    """The summary fields for a group of episodes (one policy, or one policy and perturbation)."""
    n = len(results)
    sides = Counter(r.side for r in results)
    latencies = [x for r in results for x in r.latencies_ms]
    tick = [r.tick_error_p99_ms for r in results if math.isfinite(r.tick_error_p99_ms)]
    finite = [r.min_clearance_m for r in results if math.isfinite(r.min_clearance_m)]
    margins = [r.min_keepout_margin_m for r in results if math.isfinite(r.min_keepout_margin_m)]
    return {
        "episodes": n,
        "success_rate": _rate([r.success for r in results]),
        "successes": sum(r.success for r in results),
        "mode_fractions": {
            "left": sides["left"] / n if n else math.nan,
            "right": sides["right"] / n if n else math.nan,
            "over": sides["over"] / n if n else math.nan,
            "none": sides["none"] / n if n else math.nan,
        },
        "successful_mode_fractions": _success_sides(results),
        "safety_violations": sum(r.safety_violations for r in results),
        "violations_by_kind": {
            "malformed": sum(r.malformed_commands for r in results),
            "position": sum(r.position_violations for r in results),
            "keepout": sum(r.keepout_violations for r in results),
        },
        "keepout_inherited": sum(r.keepout_inherited for r in results),
        "velocity_exceedances": sum(r.velocity_exceedances for r in results),
        "collisions": sum(r.collisions for r in results),
        "episodes_with_collision": sum(r.collisions > 0 for r in results),
        "reflexes": sum(r.reflexes for r in results),
        "episodes_with_reflex": sum(r.reflexes > 0 for r in results),
        "interventions": sum(r.interventions for r in results),
        "filter_fallbacks": sum(r.filter_fallbacks for r in results),
        "p50_inference_ms": finite_percentile(latencies, 50),
        "p99_inference_ms": finite_percentile(latencies, 99),
        "p99_tick_error_ms": max(tick) if tick else math.nan,
        "missed_ticks": sum(r.missed_ticks for r in results),
        "min_clearance_m": min(finite) if finite else math.nan,
        "min_keepout_margin_m": min(margins) if margins else math.nan,
        "mean_path_length_m": _mean([r.path_length_m for r in results]),
        "mean_time_to_success_s": _mean([r.time_s for r in results if r.success]),
        "mean_rms_jerk": _mean([r.rms_jerk for r in results]),
        "failures": dict(Counter(r.failure for r in results if r.failure != "none")),
    }


def _mean(values: Sequence[float]) -> float:
    v = [x for x in values if math.isfinite(x)]
    return float(np.mean(v)) if v else math.nan


def _success_sides(results: Sequence[EpisodeResult]) -> dict[str, float]:
    won = [r for r in results if r.success]
    if not won:
        return {"left": math.nan, "right": math.nan}
    sides = Counter(r.side for r in won)
    return {"left": sides["left"] / len(won), "right": sides["right"] / len(won)}


def summarise(
    results: Sequence[EpisodeResult],
    primary: str,
    baseline: str | None,
    robot_controller: str | None = None,
    task: str | None = None,
) -> dict[str, Any]:
    """The run's summary: the primary policy's fields at the top level, per-perturbation groups,
    and the same fields for the baseline under "baseline" (None without one); `robot_controller`
    is the simulated robot side the run used (sim_arm's `robot_controller`), `task` the task
    (sim/tasks.py) it ran."""

    def block(policy: str) -> dict[str, Any]:
        mine = [r for r in results if r.policy == policy]
        out = group_summary(mine)
        out["by_perturbation"] = {
            name: group_summary([r for r in mine if r.perturbation == name])
            for name in dict.fromkeys(r.perturbation for r in mine)
        }
        return out

    summary = {
        "task": task, "policy": primary, "robot_controller": robot_controller, **block(primary),
    }  # fmt: skip
    summary["baseline"] = None if baseline is None else {"policy": baseline, **block(baseline)}
    return summary


def table_rows(results: Sequence[EpisodeResult]) -> list[dict[str, Any]]:
    """One row per (policy, perturbation) for the stdout table."""
    rows = []
    keys = dict.fromkeys((r.policy, r.perturbation) for r in results)
    for policy, pert in keys:
        group = [r for r in results if r.policy == policy and r.perturbation == pert]
        s = group_summary(group)
        fails = ", ".join(f"{k} {v}" for k, v in sorted(s["failures"].items())) or "-"
        rows.append(
            {
                "policy": policy,
                "perturbation": pert,
                "episodes": s["episodes"],
                "success": f"{s['successes']}/{s['episodes']}",
                "left": sum(r.side == "left" for r in group),
                "right": sum(r.side == "right" for r in group),
                "collisions": s["collisions"],
                "violations": s["safety_violations"],
                "interventions": s["interventions"],
                "infer_p50_ms": s["p50_inference_ms"],
                "tick_p99_ms": s["p99_tick_error_ms"],
                "failures": fails,
            }
        )
    return rows
