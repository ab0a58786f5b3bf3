"""Closed-loop evaluation through the real node and the simulator: seed panels, metrics, plots.

Modules, from the bottom up (only client and runner import ROS):

- perturbations: the named perturbations (none, delay, noise, obstacle_shift, dropout) and what
  each asks of the simulator (sim/perturbation.py applies them).
- safety_check: CommandChecker, the evaluation's own check of every command against the effective
  joint limits and the keep-out spheres.
- metrics: EpisodeTrace -> EpisodeResult (the metrics and the failure-label rules are defined in
  its docstring) and the run summary.
- artifact, plots: the run directory (config.json, seeds.json, episodes.csv/json, summary.json,
  PNG plots).
- paths: where the shipped models and config/sim.yaml are.
- client, runner: the evaluation's rclpy node and the episode loop (`run_eval`), which runs
  `sim_arm` and `controller` as processes (diffusion_controller/node_process.py). The `eval` and
  `demo` commands are thin layers over run_eval.
"""
