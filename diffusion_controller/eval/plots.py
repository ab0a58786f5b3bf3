"""The run's figures (matplotlib, Agg backend: no display needed).

- paths.png: top view of every episode's tool path, one panel per policy, coloured by the side it
  took (solid: success, dashed: failure), with each task's obstacle (red; dotted: where a shifted
  one went) and target (green); drawn as seen from behind the robot, so the robot's left is on
  the left.
- latency_hist.png: inference latency samples per policy.
- success_by_perturbation.png: success rate per perturbation, one bar per policy.
- cube_outcomes.png (pick_place): top view of where each episode's cube lay at the start, one
  panel per policy (rows) and perturbation (columns), coloured by the episode's outcome (success
  or its failure label), with the cube's patch and the two bins; shows whether failures cluster
  in a part of the patch (its edges, the middle between the bins) rather than spread evenly.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from diffusion_controller.eval.metrics import EpisodeResult

SIDE_COLOURS = {"left": "tab:blue", "right": "tab:orange", "over": "tab:purple", "none": "0.5"}
OUTCOME_COLOURS = {
    "success": "tab:green", "missed_grasp": "tab:orange", "dropped": "tab:red",
    "wrong_place": "tab:purple", "timeout": "0.45", "collision": "k", "reflex": "tab:cyan",
}  # fmt: skip


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _policies(results: Sequence[EpisodeResult]) -> list[str]:
    return list(dict.fromkeys(r.policy for r in results))


def path_legend_handles() -> list:
    """One legend entry per kind of thing paths.png draws, so a reader need not guess a colour."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Circle

    handles: list = [Line2D([], [], color=c, label=f"side: {s}") for s, c in SIDE_COLOURS.items()]
    handles += [
        Line2D([], [], color="k", ls="-", label="success"),
        Line2D([], [], color="k", ls="--", label="failure"),
        Line2D([], [], color="k", ls="", marker=".", ms=3, label="start"),
        Circle((0, 0), 1, color="tab:red", alpha=0.25, label="obstacle"),
        Circle((0, 0), 1, fill=False, ls=":", color="tab:red", label="shifted obstacle"),
        Circle((0, 0), 1, color="tab:green", alpha=0.2, label="target (success radius)"),
    ]
    return handles


def plot_paths(path: Path, results: Sequence[EpisodeResult]) -> None:
    plt = _pyplot()
    from matplotlib.patches import Circle

    policies = _policies(results) or ["(no episodes)"]
    fig, axes = plt.subplots(1, len(policies), figsize=(5.2 * len(policies), 5.4), squeeze=False)
    for ax, policy in zip(axes[0], policies, strict=True):
        drawn: set[tuple[float, float]] = set()
        for r in (r for r in results if r.policy == policy):
            task = r.task
            ob = task.get("obstacle", {})
            key = (round(ob.get("x", 0.0), 4), round(ob.get("y", 0.0), 4))
            if ob and key not in drawn:
                drawn.add(key)
                ax.add_patch(Circle((ob["y"], ob["x"]), ob["radius"], color="tab:red", alpha=0.25))
                tgt = task["target"]
                radius = task.get("success_radius", 0.04)
                ax.add_patch(Circle((tgt[1], tgt[0]), radius, color="tab:green", alpha=0.2))
            for update in r.obstacle_updates:  # where a shifted obstacle went
                moved = update.get("obstacle", {})
                if moved:
                    ax.add_patch(
                        Circle(
                            (moved["y"], moved["x"]),
                            moved["radius"],
                            fill=False,
                            ls=":",
                            color="tab:red",
                        )
                    )
            p = np.asarray(r.path, dtype=float).reshape(-1, 3)
            if p.shape[0] == 0:
                continue
            style = "-" if r.success else "--"
            ax.plot(p[:, 1], p[:, 0], style, color=SIDE_COLOURS.get(r.side, "0.5"), lw=1.2)
            ax.plot(p[0, 1], p[0, 0], "k.", ms=3)
        ax.set_title(policy)
        ax.set_xlabel("y (m), robot's left to the left")
        ax.set_ylabel("x (m), forward")
        ax.set_aspect("equal", adjustable="datalim")
        ax.invert_xaxis()
        ax.grid(alpha=0.3)
    handles = path_legend_handles()
    fig.legend(handles=handles, loc="lower center", ncol=4, frameon=False)
    fig.suptitle("Tool paths (top view)")
    fig.tight_layout(rect=(0, 0.16, 1, 1))
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def plot_latency(path: Path, results: Sequence[EpisodeResult]) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    any_data = False
    for policy in _policies(results):
        samples = [x for r in results if r.policy == policy for x in r.latencies_ms]
        if samples:
            any_data = True
            p50 = float(np.percentile(samples, 50))
            ax.hist(samples, bins=30, alpha=0.55, label=f"{policy} (p50 {p50:.1f} ms)")
    if not any_data:
        ax.text(0.5, 0.5, "no inference samples", ha="center", va="center", transform=ax.transAxes)
    else:
        ax.legend()
    ax.set_xlabel("inference latency (ms)")
    ax.set_ylabel("samples")
    ax.set_title("Inference latency")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_success(path: Path, results: Sequence[EpisodeResult]) -> None:
    plt = _pyplot()
    policies = _policies(results)
    perts = list(dict.fromkeys(r.perturbation for r in results))
    fig, ax = plt.subplots(figsize=(max(5.0, 1.6 * len(perts) + 2), 4.2))
    width = 0.8 / max(1, len(policies))
    x = np.arange(len(perts))
    for i, policy in enumerate(policies):
        rates, counts = [], []
        for pert in perts:
            group = [r for r in results if r.policy == policy and r.perturbation == pert]
            rates.append(np.mean([r.success for r in group]) if group else np.nan)
            counts.append(len(group))
        bars = ax.bar(x + (i - (len(policies) - 1) / 2) * width, rates, width, label=policy)
        for bar, rate, n in zip(bars, rates, counts, strict=True):
            if n:
                ax.annotate(
                    f"{rate:.0%}\n(n={n})",
                    (bar.get_x() + bar.get_width() / 2, rate),
                    ha="center",
                    va="bottom",
                    fontsize=8,
                )
    ax.set_xticks(x, perts)
    ax.set_ylim(0, 1.15)
    ax.set_ylabel("success rate")
    ax.set_title("Success per perturbation")
    if policies:
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def outcome_of(r: EpisodeResult) -> str:
    return "success" if r.success else r.failure


def plot_cube_outcomes(path: Path, results: Sequence[EpisodeResult]) -> None:
    plt = _pyplot()
    from matplotlib.lines import Line2D
    from matplotlib.patches import Rectangle

    from diffusion_controller.sim.pick_place import CUBE_X, CUBE_Y

    policies = _policies(results) or ["(no episodes)"]
    perts = list(dict.fromkeys(r.perturbation for r in results)) or ["none"]
    height = 3.0 * len(policies) + 0.7  # a panel is 0.84 x 0.40 m: wide and low
    fig, axes = plt.subplots(
        len(policies), len(perts), figsize=(4.6 * len(perts), height), squeeze=False
    )
    seen: set[str] = set()
    for row, policy in zip(axes, policies, strict=True):
        for ax, pert in zip(row, perts, strict=True):
            group = [r for r in results if r.policy == policy and r.perturbation == pert]
            ax.add_patch(Rectangle((CUBE_Y[0], CUBE_X[0]), CUBE_Y[1] - CUBE_Y[0],
                                   CUBE_X[1] - CUBE_X[0], fill=False, ls=":", color="0.5"))
            bins: dict[tuple[float, float], dict] = {}
            for r in group:
                for b in r.task.get("bins", []):
                    bins.setdefault((round(b["x"], 4), round(b["y"], 4)), b)
            for b in bins.values():
                h = b["inner_half"]
                ax.add_patch(Rectangle((b["y"] - h, b["x"] - h), 2 * h, 2 * h, fill=False,
                                       color="goldenrod", lw=1.5))
                ax.annotate(b["name"], (b["y"], b["x"]), ha="center", va="center",
                            color="goldenrod")
            for r in group:
                cube = r.task.get("cube")
                if not cube:
                    continue
                outcome = outcome_of(r)
                seen.add(outcome)
                ax.plot(cube[1], cube[0], "o", ms=7, mec="k", mew=0.5,
                        color=OUTCOME_COLOURS.get(outcome, "tab:brown"))
            won = sum(r.success for r in group)
            ax.set_title(f"{policy} / {pert}: {won}/{len(group)}", fontsize=10)
            ax.set_xlabel("y (m), robot's left to the left")
            ax.set_ylabel("x (m), forward")
            ax.set_xlim(0.42, -0.42)  # the robot's left on the left, both bins in view
            ax.set_ylim(0.36, 0.76)
            ax.set_aspect("equal")
            ax.grid(alpha=0.3)
    ordered = [o for o in OUTCOME_COLOURS if o in seen] + sorted(seen - set(OUTCOME_COLOURS))
    handles = [Line2D([], [], ls="", marker="o", mec="k", mew=0.5, ms=7,
                      color=OUTCOME_COLOURS.get(o, "tab:brown"), label=o) for o in ordered]
    handles.append(Rectangle((0, 0), 1, 1, fill=False, ls=":", color="0.5", label="cube patch"))
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 5), frameon=False)
    fig.suptitle("Cube start positions by outcome (top view)")
    fig.tight_layout(rect=(0, 0.7 / height, 1, 1))
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def write_plots(
    out: Path, results: Sequence[EpisodeResult], task: str = "panda_reach"
) -> tuple[list[Path], list[str]]:
    """All figures of a run of `task` into `out`; returns (written, errors) so one failing plot
    spares the others."""
    made: list[Path] = []
    errors: list[str] = []
    figures = [
        ("paths.png", plot_paths),
        ("latency_hist.png", plot_latency),
        ("success_by_perturbation.png", plot_success),
    ]
    if task == "pick_place":
        figures.append(("cube_outcomes.png", plot_cube_outcomes))
    for name, fn in figures:
        try:
            fn(out / name, results)
            made.append(out / name)
        except Exception as exc:  # a figure is not worth losing the run's numbers over
            errors.append(f"{name}: {type(exc).__name__}: {exc}")
    return made, errors
