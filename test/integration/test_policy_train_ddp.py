"""Data-parallel training under torchrun: two CPU processes (gloo) train one model together."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap

import pytest
import torch

from diffusion_controller.policy.artifact import load_artifact
from diffusion_controller.policy.train import read_checkpoint

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.mark.slow
@pytest.mark.skipif(
    not torch.distributed.is_available(), reason="this torch build has no torch.distributed"
)
def test_two_process_ddp_run_writes_one_artifact(tmp_path) -> None:
    script = tmp_path / "run.py"
    script.write_text(
        textwrap.dedent(f"""
        import json, sys, torch
        torch.set_num_threads(1)
        sys.path.insert(0, {HERE!r})
        from test_policy_training import toy_config, toy_episodes
        from diffusion_controller.policy.train import TrainConfig, train
        r = train(toy_episodes(2), toy_config("diffusion"),
                  TrainConfig(steps=6, batch_size=4, log_every=3, checkpoint_every=3,
                              warmup_steps=1), sys.argv[1], progress=False)
        # one write per line: the ranks share torchrun's stdout (unbuffered output would
        # otherwise write the text and the newline apart, and the ranks' lines interleave)
        sys.stdout.write("RESULT " + json.dumps({{"steps": r.steps, "loss": r.final_loss,
                                                 "sha": r.weights_sha256}}) + "\\n")
        sys.stdout.flush()
    """)
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            str(script),
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = re.findall(r"RESULT (\{[^{}]*\})", proc.stdout)
    assert len(results) == 2, proc.stdout
    parsed = [json.loads(r) for r in results]
    assert all(p["steps"] == 6 for p in parsed)
    assert parsed[0]["loss"] == pytest.approx(parsed[1]["loss"])  # all-reduced
    assert sum(bool(p["sha"]) for p in parsed) == 1  # only rank 0 writes the artifact
    assert read_checkpoint(tmp_path / "out")["step"] == 6
    art = load_artifact(tmp_path / "out")
    assert art.meta["training"]["world_size"] == 2
