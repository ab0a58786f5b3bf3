"""Closed-loop evaluation: the real controller node drives the real simulator over DDS.

    sim_arm process  <── /forward_position_controller/commands ──  controller process
         │  /joint_states, /camera/image_raw, /robot_description          ▲  ~/enable, parameters
         │  /sim/task, /sim/contacts                                      │  /diagnostics
         └──────────────────────────> evaluation node (this process) ─────┘

Both nodes run as processes of their own in a DDS domain of the run's own (so a run never talks
to a real arm on the operator's domain); sim_arm runs the run's task (`task`: panda_reach or
pick_place, sim/tasks.py). Per policy the controller is started with a parameter file
(config/sim.yaml plus the model and the evaluation's settings), and for every perturbation and
seed of the panel the evaluation node:

1. disables the controller (~/enable false: it brakes to a stop and goes quiet) and waits until
   no command arrives;
2. sets the simulator's seed, perturbation and timeout parameters and calls its ~/reset;
3. sets the controller's `obstacles` parameter (the keep-out spheres of the task,
   TaskSpec.obstacle_spheres; none for pick_place, whose bins and cube the filter is not told
   about) through its parameter service, and the command checker's, with the sampler's seed and,
   under an ablation (warm_start_off, inpainting_off), its live sampling parameters;
4. waits `settle` seconds so the camera shows the new scene, then enables the controller;
5. records until the simulator's verdict (success, collision or timeout; pick_place also ends at
   the first robot-side reflex, which holds the arm for good); if the obstacle moves
   (obstacle_shift), sets the moved keep-out spheres on the controller and the checker at once;
6. disables the controller again and turns the recording into an EpisodeResult.

The baseline runs the same panel with a second controller process started with its model.
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import Any

from diffusion_controller.eval import paths
from diffusion_controller.eval.artifact import default_run_dir, write_run
from diffusion_controller.eval.config import (  # EvalConfig: re-exported for the CLI and tests
    TRAINING_SEEDS,
    EvalConfig,
    Progress,
    RunOutcome,
    controller_params,
    model_facts,
    pick_domain_id,
    versions,
)
from diffusion_controller.eval.metrics import (
    EpisodeResult,
    EpisodeTrace,
    episode_result,
)
from diffusion_controller.eval.nodes import EvalNodes
from diffusion_controller.eval.perturbations import (
    controller_values,
    describe,
    perturbation_for,
)
from diffusion_controller.eval.summary import summarise, table_rows
from diffusion_controller.node_process import child_env, write_params_file
from diffusion_controller.settings.controller import SPECS


class _Run(EvalNodes):
    """One evaluation run: the episode loop over the processes and client node of EvalNodes."""

    def __init__(self, cfg: EvalConfig, progress: Progress) -> None:
        super().__init__()
        self.cfg = cfg
        self.progress = progress
        self.notes: list[str] = []
        self.results: list[EpisodeResult] = []

    # ------------------------------------------------------------------ one episode
    def episode(
        self,
        policy: str,
        pert_name: str,
        seed: int,
        spec0: Any,
        procs: list[Any],
        control_dt: float,
        own_params: dict[str, Any],
    ) -> EpisodeResult:
        """One episode of `policy` on `seed` under `pert_name` (steps 1-6 of the module
        docstring); `own_params` are the policy's controller parameters (what an ablation's
        parameters go back to)."""
        from diffusion_controller.eval.client import EvalError

        cfg, client = self.cfg, self.client
        wall0 = time.monotonic()
        client.enable(False)
        if not client.wait_quiet(0.25, timeout=5.0):
            self.notes.append(f"{policy} seed {seed}: commands kept coming 5 s after disabling")
        last = client.last_diag
        if last is not None and last.state == "estopped":  # latched by the previous episode
            answer = client.trigger_reset()
            self.notes.append(f"{policy} seed {seed}: cleared a latched e-stop ({answer})")
        pert = perturbation_for(pert_name, spec0, cfg.settle)
        sim_values: dict[str, Any] = {
            "seed": int(seed),
            "episode_timeout": cfg.settle + cfg.timeout,
        }
        for key, value in pert.to_dict().items():
            sim_values[key] = [float(v) for v in value] if isinstance(value, list) else float(value)
        client.set_params("sim_arm", sim_values)
        spec, episode = client.reset_sim()
        keepout = _keepout(spec, cfg)
        # The policy's sampling noise follows the episode seed (every inference of the episode
        # draws it from this seed), so a rerun of the panel draws the same noise.
        client.set_params(client.controller, {
            "obstacles": _flat(keepout),
            "seed": int(seed) % (2**31),
            **controller_values(cfg.perturbations, pert_name, own_params),
        })  # fmt: skip
        trace = EpisodeTrace(
            policy=policy, perturbation=pert_name, seed=seed, spec=spec, control_dt=control_dt
        )
        client.begin(trace, episode, keepout)
        time.sleep(cfg.settle)
        trace.diag_before = client.last_diag
        trace.t_enable = time.monotonic()
        client.enable(True)
        guard = trace.t_enable + 3.0 * (cfg.settle + cfg.timeout) + 10.0
        end_reason = "verdict"
        while not client.verdict.wait(0.02):
            moved = client.take_task_update()
            if moved is not None:
                spheres = _keepout(moved, cfg)
                client.set_params(client.controller, {"obstacles": _flat(spheres)})
                client.update_keepout(spheres)
                trace.obstacle_updates.append(
                    {
                        "t": time.monotonic() - trace.t_enable,
                        "sim_time": moved.extra.get("obstacle_shifted_at"),
                        "obstacle": moved.to_dict()["obstacle"],
                    }
                )
            for proc in procs:
                if not proc.alive:
                    raise EvalError(
                        f"{proc.name} exited during seed {seed} (code "
                        f"{proc.proc.returncode}):\n{proc.log_tail()}"
                    )
            if time.monotonic() > guard:
                end_reason = "wall timeout: no verdict from the simulator"
                break
        trace.t_end = client.mark_end()
        client.enable(False)
        client.wait_quiet(0.25, timeout=5.0)
        trace.diag_after = client.wait_diag_after(trace.t_end, timeout=1.0)
        trace = client.finish()
        trace.end_reason = end_reason
        trace.wall_s = time.monotonic() - wall0
        return episode_result(trace)

    # ------------------------------------------------------------------ the run
    def run(self) -> RunOutcome:
        from diffusion_controller.eval.client import EvalError
        from diffusion_controller.eval.safety_check import CommandChecker
        from diffusion_controller.sim.tasks import DEFAULT_TASK, get_task

        cfg = self.cfg
        problems = cfg.validate()
        if problems:
            raise EvalError("; ".join(problems))
        task = get_task(cfg.task)
        default_model, default_baseline = paths.task_models(cfg.task)
        model, note = paths.resolve_model(cfg.model, default_model)
        if model is None:
            raise EvalError(
                f"no model to evaluate: {note}. Pass --model DIR (train one with "
                "`diffusion-controller train`)."
            )
        models: list[Path] = [model]
        if cfg.baseline != "none":
            base, note = paths.resolve_model(cfg.baseline, default_baseline)
            if base is None and cfg.baseline is not None:
                raise EvalError(f"baseline: {note}")
            if base is None and cfg.task != DEFAULT_TASK:
                # The reach task predates its shipped baseline and runs on without one; a newer
                # task's run is the comparison it was asked for, so an absent default stops it.
                raise EvalError(
                    f"no baseline for {cfg.task}: {note}. Pass --baseline DIR (train one with "
                    f"`diffusion-controller train --kind regression`), or --baseline none to "
                    "evaluate the policy alone."
                )
            if base is None:
                self.notes.append(f"no baseline: {note}")
            else:
                models.append(base)
        # Policies are named by their kind ("diffusion", "regression"), made unique.
        policies: list[tuple[str, Path]] = []
        facts: dict[str, dict[str, Any]] = {}
        for i, path in enumerate(models):
            f = model_facts(path)
            name = str(f.get("kind", "policy"))
            if name in facts:
                name = f"{name}_baseline" if i else name
            policies.append((name, path))
            facts[name] = f
        handless = [name for name, f in facts.items() if f.get("gripper") is False]
        if task.has_gripper() and handless:  # a model without a hand cannot pick anything up
            raise EvalError(
                f"the {cfg.task} task needs a gripper policy; {', '.join(handless)} "
                f"({', '.join(str(facts[n]['path']) for n in handless)}) has no gripper"
            )
        primary = policies[0][0]
        baseline_name = policies[1][0] if len(policies) > 1 else None

        out = Path(cfg.out) if cfg.out else default_run_dir(prefix=cfg.prefix)
        out.mkdir(parents=True, exist_ok=True)
        logs = out / "logs"
        domain = cfg.domain_id if cfg.domain_id is not None else pick_domain_id()
        seeds = list(range(cfg.first_seed, cfg.first_seed + cfg.seeds))
        overlap = [s for s in seeds if s in TRAINING_SEEDS]
        if overlap:
            self.notes.append(f"{len(overlap)} eval seeds overlap the training seeds 0-299")
        specs = {s: task.sample(s) for s in seeds}
        if cfg.timeout is None:  # the task's own, recorded in config.json as a number
            cfg = self.cfg = dataclasses.replace(cfg, timeout=float(specs[seeds[0]].timeout))
        params_by_policy = {name: controller_params(path, cfg) for name, path in policies}
        config = {
            "command": cfg.prefix,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "eval": {k: v for k, v in vars(cfg).items()},
            "policies": {name: facts[name] for name, _ in policies},
            "primary": primary,
            "baseline": baseline_name,
            "perturbations": {p: describe()[p] for p in cfg.perturbations},
            "controller_params": params_by_policy,
            "sim_params": {"task": cfg.task, "contacts_rate_hz": 25.0, "real_time_factor": 1.0},
            "ros_domain_id": domain,
            "versions": versions(),
        }
        seeds_doc = {
            "first_seed": cfg.first_seed,
            "count": cfg.seeds,
            "seeds": seeds,
            "training_seeds": [TRAINING_SEEDS.start, TRAINING_SEEDS.stop - 1],
            "tasks": {str(s): specs[s].to_dict() for s in seeds},
        }
        total = len(policies) * len(cfg.perturbations) * len(seeds)
        self.progress(
            f"eval: {len(seeds)} seeds from {cfg.first_seed} x "
            f"{len(cfg.perturbations)} perturbation(s) x {len(policies)} policy(ies) = "
            f"{total} episodes; ROS domain {domain}; artifact {out}"
        )
        env = child_env(domain)
        error: str | None = None
        try:
            self.start_ros(domain)
            sim = self.start_sim(logs, env, {
                "task": cfg.task,
                "seed": int(cfg.first_seed),
                "contacts_rate_hz": 25.0,
                "robot_controller": cfg.robot_controller,
            })  # fmt: skip
            self.client.end_on_reflex = task.has_gripper()
            done = 0
            t_run = time.monotonic()
            for name, path in policies:
                values = params_by_policy[name]
                checker = CommandChecker.from_params(
                    self.client.urdf,
                    values.get("joint_names", SPECS["joint_names"].default),
                    position_margin=float(_param(values, "position_margin")),
                    velocity_scale=float(_param(values, "velocity_scale")),
                    acceleration_scale=float(_param(values, "acceleration_scale")),
                    jerk_scale=float(_param(values, "jerk_scale")),
                    control_rate_hz=float(_param(values, "control_rate_hz")),
                )
                self.client.checker = checker
                params_file = write_params_file(
                    logs / f"controller_{name}.yaml", values, node="/diffusion_controller"
                )
                self.progress(
                    f"starting the {name} controller ({path.name}, backend {cfg.backend})"
                )
                t0 = time.monotonic()
                ctrl = self.start_controller(name, params_file, logs, env, cfg.startup_timeout)
                self.progress(f"{name} controller active after {time.monotonic() - t0:.1f} s")
                for pert in cfg.perturbations:
                    for seed in seeds:
                        r = self.episode(
                            name, pert, seed, specs[seed], [sim, ctrl], checker.dt, values
                        )
                        self.results.append(r)
                        done += 1
                        self.progress(_episode_line(done, total, r, time.monotonic() - t_run))
                self.stop_proc(ctrl)
                self.client.checker = None
        except EvalError as exc:
            error = str(exc)
        except KeyboardInterrupt:
            error = "interrupted"
            raise
        finally:
            self.close()
            idle = self.client.idle if self.client is not None else None
            summary = summarise(
                self.results, primary, baseline_name, cfg.robot_controller, task=cfg.task
            )
            summary["idle_commands"] = idle.commands if idle is not None else 0
            summary["idle_violations"] = idle.violations if idle is not None else 0
            summary["notes"] = self.notes
            summary["error"] = error
            summary["artifact"] = str(out)
            write_run(
                out, config, seeds_doc, self.results, summary, plots=cfg.plots, task=cfg.task
            )
        if error is not None:
            raise EvalError(f"{error}\n(results so far, {len(self.results)} episodes, in {out})")
        return RunOutcome(out, summary, self.results, table_rows(self.results), self.notes)


def _param(values: dict[str, Any], name: str) -> Any:
    return values.get(name, SPECS[name].default)


def _keepout(spec: Any, cfg: EvalConfig) -> list[Any]:
    """The keep-out spheres the filter is told about: the task's obstacle (grown by
    `keepout_margin`), none under --no-keepout or for a task without an obstacle (pick_place)."""
    spheres = getattr(spec, "obstacle_spheres", None)
    if not cfg.keepout or spheres is None:
        return []
    return list(spheres(margin=cfg.keepout_margin))


def _flat(spheres: list[Any]) -> list[float]:
    out: list[float] = []
    for s in spheres:
        out += [float(x) for x in s.center] + [float(s.radius)]
    return out


def _episode_line(done: int, total: int, r: EpisodeResult, elapsed: float) -> str:
    """One line per episode (each takes seconds, so a log hears from the run at least every
    30 s): the outcome, then the run's count, rate, elapsed and ETA (the progress module's)."""
    from diffusion_controller.progress import format_line

    verdict = "success" if r.success else f"FAIL ({r.failure})"
    lat = f"{r.inference_p50_ms:.0f} ms" if math.isfinite(r.inference_p50_ms) else "n/a"
    return (
        f"[{done}/{total}] {r.policy:<10} {r.perturbation:<14} seed {r.seed}: {verdict:<22} "
        f"side {r.side:<5} t {r.time_s:5.1f} s  collisions {r.collisions}  violations "
        f"{r.safety_violations}  interventions {r.interventions}  inference p50 {lat}  | "
        + format_line("eval", done, total, "episode", elapsed)
    )


def run_eval(cfg: EvalConfig, progress: Progress = print) -> RunOutcome:
    """Run the evaluation described by `cfg`; raises EvalError (after writing what it has)."""
    return _Run(cfg, progress).run()
