"""`diffusion-controller train` end to end on a few .npz episodes: table, JSON, artifact, resume."""

from __future__ import annotations

import json

import numpy as np
import torch

from diffusion_controller.cli import main
from diffusion_controller.data.episode import Episode
from diffusion_controller.policy.artifact import load_artifact

torch.set_num_threads(1)


def write_episodes(folder, n=2, t=6) -> None:
    folder.mkdir()
    rng = np.random.default_rng(0)
    names = [f"panda_joint{i}" for i in range(1, 8)]
    for e in range(n):
        joints = rng.normal(size=(t, 7)).cumsum(axis=0) * 0.01
        images = {"camera": rng.integers(0, 256, (t, 48, 64, 3), dtype=np.uint8)}
        Episode(names, np.arange(t) * 0.1, joints, joints + 0.01, images).save(folder / f"{e}.npz")


def test_train_command(tmp_path, capsys) -> None:
    write_episodes(tmp_path / "demos")
    out = tmp_path / "model"
    args = [
        "train",
        "--data",
        str(tmp_path / "demos"),
        "--out",
        str(out),
        "--steps",
        "2",
        "--batch-size",
        "4",
        "--horizon",
        "8",
        "--quiet",
        "--json",
        str(tmp_path / "m.json"),
    ]
    assert main(args) == 0
    table = capsys.readouterr().out
    assert "final_loss" in table and "diffusion" in table
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["steps"] == 2 and len(metrics["weights_sha256"]) == 64
    art = load_artifact(out)
    assert art.config.image_size == (96, 96) and art.config.horizon == 8
    assert art.config.action_dt == 0.1 and art.config.cameras == ["camera"]
    assert "diffusion-controller train" in art.meta["training"]["command"]

    args[args.index("--steps") + 1] = "3"
    assert main(args) == 0
    assert json.loads((tmp_path / "m.json").read_text())["resumed_from"] == 2


def test_train_command_reports_bad_data(tmp_path, capsys) -> None:
    assert (
        main(
            ["train", "--data", str(tmp_path / "nothing"), "--out", str(tmp_path / "o"), "--quiet"]
        )
        == 2
    )
    assert "no such file" in capsys.readouterr().err


def test_init_from_starts_from_the_artifacts_weights(tmp_path, capsys) -> None:
    """--init-from: a new run (no checkpoints) starts from a model's weights and normalizers, and
    its card says so; a model of another policy config is refused with the fields that differ."""
    write_episodes(tmp_path / "demos")
    base = ["train", "--data", str(tmp_path / "demos"), "--batch-size", "4", "--horizon", "8",
            "--quiet", "--lr", "1e-9", "--threads", "1"]  # fmt: skip
    first = tmp_path / "first"
    assert main([*base, "--out", str(first), "--steps", "2"]) == 0
    second = tmp_path / "second"
    # lr 1e-9: one step barely moves the weights, so the new model is the old one (not a fresh init)
    assert main([*base, "--out", str(second), "--steps", "1", "--init-from", str(first)]) == 0
    a, b = load_artifact(first), load_artifact(second)
    for name, tensor in a.net.state_dict().items():
        assert torch.allclose(tensor, b.net.state_dict()[name], atol=1e-6), name
    assert np.array_equal(a.normalizers["actions"].low, b.normalizers["actions"].low)
    assert str(first) in b.meta["training"]["initialized_from"]
    assert "--init-from" in b.meta["training"]["command"]

    capsys.readouterr()
    other = [*base, "--out", str(tmp_path / "third"), "--steps", "1", "--init-from", str(first)]
    other[other.index("--horizon") + 1] = "4"
    assert main(other) == 2
    err = capsys.readouterr().err
    assert "--init-from" in err and "horizon" in err
    assert main([*base[:-2], "--out", str(tmp_path / "fourth"), "--threads", "0"]) == 2
    assert "--threads" in capsys.readouterr().err
