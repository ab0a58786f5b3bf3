"""One directory per evaluation run: configuration, seed panel, episode table, summary, plots.

runs/eval-20260101-120000/
  config.json         what was run: models, parameters, perturbation magnitudes, versions
  seeds.json          the seed panel and the task of every seed
  episodes.csv        one row per episode (metrics; see eval/metrics.py)
  episodes.json       the same rows plus each episode's tool path, latencies and task
  summary.json        the run's summary (primary policy at the top level, "baseline" below)
  paths.png, latency_hist.png, success_by_perturbation.png
  cube_outcomes.png   pick_place only: where each cube lay, coloured by the episode's outcome
  logs/               the simulator's and the controllers' output
"""

from __future__ import annotations

import csv
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from diffusion_controller.eval.metrics import EpisodeResult
from diffusion_controller.report import write_json

FILES = ("config.json", "seeds.json", "episodes.csv", "episodes.json", "summary.json")
PLOTS = ("paths.png", "latency_hist.png", "success_by_perturbation.png")
TASK_PLOTS: dict[str, tuple[str, ...]] = {"pick_place": ("cube_outcomes.png",)}  # besides PLOTS
# The summary's fields that scripts may rely on (the rest may grow); "baseline" holds the
# baseline policy's summary when one ran
SUMMARY_FIELDS = ("episodes", "success_rate", "mode_fractions", "safety_violations", "collisions",
                  "p50_inference_ms", "p99_tick_error_ms", "baseline", "robot_controller",
                  "reflexes", "task")


def plots_for(task: str) -> tuple[str, ...]:
    """The figures a run of `task` writes."""
    return PLOTS + TASK_PLOTS.get(task, ())


def default_run_dir(root: str | os.PathLike[str] = "runs", prefix: str = "eval") -> Path:
    """runs/<prefix>-<local time>, with a numeric suffix if that exists already."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = Path(root) / f"{prefix}-{stamp}"
    path, k = base, 1
    while path.exists():
        path = Path(f"{base}-{k}")
        k += 1
    return path


def _csv_cell(value: Any) -> Any:
    if isinstance(value, float):
        return "" if not math.isfinite(value) else f"{value:.6g}"
    return value


def write_episodes(out: Path, results: Sequence[EpisodeResult]) -> None:
    cols = EpisodeResult.csv_columns()
    with open(out / "episodes.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=cols)
        writer.writeheader()
        for r in results:
            writer.writerow({k: _csv_cell(v) for k, v in r.row().items()})
    write_json(out / "episodes.json", [r.to_dict() for r in results])


def write_run(
    out: Path,
    config: dict[str, Any],
    seeds: dict[str, Any],
    results: Sequence[EpisodeResult],
    summary: dict[str, Any],
    plots: bool = True,
    task: str = "panda_reach",
) -> list[Path]:
    """Write every file of the artifact; returns the paths written. Plots that fail (e.g. no
    matplotlib) are reported in summary["plot_errors"] rather than failing the run; `task` picks
    the task's own figures (TASK_PLOTS)."""
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "config.json", config)
    write_json(out / "seeds.json", seeds)
    write_episodes(out, results)
    written = [out / f for f in FILES[:-1]]
    if plots:
        from diffusion_controller.eval.plots import write_plots

        made, errors = write_plots(out, results, task=task)
        written += made
        if errors:
            summary = {**summary, "plot_errors": errors}
    write_json(out / "summary.json", summary)
    written.append(out / "summary.json")
    return written
