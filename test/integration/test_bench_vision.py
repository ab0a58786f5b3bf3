"""`bench vision` on a random model and synthetic episodes: the gain is what the images make of
the chunk, so identical camera frames in every episode must give a gain of exactly 0 (the chunk
cannot depend on what is not there), and different frames a finite one."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from diffusion_controller.cli import main
from diffusion_controller.data.episode import Episode
from diffusion_controller.runtime.random_model import PANDA_JOINTS, make_random_artifact

torch.set_num_threads(1)


def write_episodes(folder, same_images: bool, n: int = 4, t: int = 5) -> None:
    folder.mkdir()
    rng = np.random.default_rng(0)
    shared = rng.integers(0, 256, (t, 32, 32, 3), dtype=np.uint8)
    for e in range(n):
        joints = np.tile(np.linspace(-0.5, 0.5, 7) + 0.1 * e, (t, 1))
        joints += rng.normal(size=(t, 7)) * 1e-3
        joints[:, 3] = -1.5  # inside the Panda's joint 4 range
        images = shared if same_images else rng.integers(0, 256, (t, 32, 32, 3), dtype=np.uint8)
        Episode(PANDA_JOINTS, np.arange(t) * 0.1, joints, joints + 0.01 * e,
                {"camera": images}).save(folder / f"{e}.npz")


@pytest.mark.parametrize("same", [True, False])
def test_gain_is_zero_when_the_camera_shows_the_same(tmp_path, same) -> None:
    model = make_random_artifact(tmp_path / "m", image_size=(32, 32), horizon=8, n_action_steps=4)
    write_episodes(tmp_path / "d", same_images=same)
    out = tmp_path / "v.json"
    assert main(["bench", "vision", "--model", model, "--data", str(tmp_path / "d"),
                 "--frames", "0,2", "--json", str(out)]) == 0  # fmt: skip
    rows = json.loads(out.read_text())["rows"]
    assert [r["frame"] for r in rows] == [0, 2] and all(r["episodes"] == 4 for r in rows)
    for r in rows:
        assert np.isfinite(r["chunk_error"]) and r["chunk_error"] >= 0
        if same:
            assert r["gain"] == 0.0
        else:
            assert np.isfinite(r["gain"]) and r["gain"] != 0.0


def test_bad_arguments(tmp_path) -> None:
    model = make_random_artifact(tmp_path / "m", image_size=(32, 32), horizon=8, n_action_steps=4)
    write_episodes(tmp_path / "d", same_images=False)
    assert main(["bench", "vision", "--model", model, "--data", str(tmp_path / "d"),
                 "--frames", "-1"]) == 2  # fmt: skip
    assert main(["bench", "vision", "--model", model, "--data", str(tmp_path / "d"),
                 "--frames", "9"]) == 2  # fmt: skip
