"""Artifacts: save/load round trip, and a clear ArtifactError for every kind of damage."""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest
import torch

from diffusion_controller.policy.artifact import (
    CARD_FILE,
    CONFIG_FILE,
    WEIGHTS_FILE,
    ArtifactError,
    load_artifact,
    load_config,
    save_artifact,
    verify_weights,
)
from diffusion_controller.policy.config import PolicyConfig
from diffusion_controller.policy.model import build_net
from diffusion_controller.policy.normalize import fit_normalizers

torch.set_num_threads(1)
JOINTS = ["j1", "j2", "j3"]


def tiny(kind: str = "diffusion") -> PolicyConfig:
    return PolicyConfig.cpu_default(
        JOINTS,
        kind=kind,
        image_size=(16, 16),
        horizon=8,
        n_obs_steps=1,
        unet={"down_dims": [16, 32], "n_groups": 4, "step_embed_dim": 16, "kernel_size": 3},
        mlp_dims=[32],
    )


def norms():
    rng = np.random.default_rng(0)
    return fit_normalizers(rng.normal(size=(20, 3)), rng.normal(size=(20, 3)))


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    cfg = tiny()
    net = build_net(cfg)
    out = tmp_path / "model"
    sha = save_artifact(
        out,
        net,
        cfg,
        norms(),
        card={"steps": 10, "final_loss": 0.5},
        extra_meta={"training": {"steps": 10}, "value": np.float32(2.5)},
    )
    return out, cfg, net, sha


@pytest.mark.parametrize("kind", ["diffusion", "regression"])
def test_round_trip(tmp_path, kind: str) -> None:
    cfg = tiny(kind)
    net = build_net(cfg)
    sha = save_artifact(tmp_path, net, cfg, norms(), card="Trained on nothing.")
    art = load_artifact(tmp_path)
    assert art.config == cfg
    assert art.weights_sha256 == sha and len(sha) == 64
    assert not art.net.training
    for k, v in net.state_dict().items():
        assert torch.equal(art.net.state_dict()[k], v)
    for key in ("joints", "actions"):
        np.testing.assert_array_equal(art.normalizers[key].low, norms()[key].low)
    assert art.meta["weights"]["num_params"] == sum(p.numel() for p in net.parameters())
    assert art.path == os.path.abspath(tmp_path)
    card = (tmp_path / CARD_FILE).read_text()
    assert "Trained on nothing." in card and sha in card and "j2" in card


def test_load_config_is_torch_free_and_returns_meta(saved) -> None:
    out, cfg, _, sha = saved
    got_cfg, got_norms, meta = load_config(out)
    assert got_cfg == cfg and set(got_norms) == {"joints", "actions"}
    assert meta["training"] == {"steps": 10} and meta["value"] == 2.5
    assert meta["weights"]["sha256"] == sha and meta["format_version"] == 1
    import subprocess

    code = (
        "import sys; from diffusion_controller.policy.artifact import load_config, "
        f"verify_weights; load_config({str(out)!r}); verify_weights({str(out)!r}); "
        "assert 'torch' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_missing_directory_and_files(saved, tmp_path) -> None:
    out = saved[0]
    with pytest.raises(ArtifactError, match="does not exist"):
        load_artifact(tmp_path / "nope")
    for name in (WEIGHTS_FILE, CONFIG_FILE):
        data = (out / name).read_bytes()
        (out / name).unlink()
        with pytest.raises(ArtifactError, match=f"no {name}"):
            load_artifact(out)
        (out / name).write_bytes(data)
    load_artifact(out)


@pytest.mark.parametrize("keep", [0, 5, 100, -1000, -4])
def test_truncated_weights(saved, keep: int) -> None:
    out = saved[0]
    path = out / WEIGHTS_FILE
    data = path.read_bytes()
    path.write_bytes(data[:keep])
    with pytest.raises(ArtifactError, match=r"truncated|corrupt"):
        load_artifact(out)


def test_flipped_bytes_in_data_give_hash_mismatch(saved) -> None:
    out = saved[0]
    path = out / WEIGHTS_FILE
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="hash mismatch"):
        load_artifact(out)
    with pytest.raises(ArtifactError, match="hash mismatch"):
        verify_weights(out)


def test_flipped_bytes_in_header_are_caught(saved) -> None:
    out = saved[0]
    path = out / WEIGHTS_FILE
    data = bytearray(path.read_bytes())
    data[9] ^= 0xFF  # inside the JSON header
    path.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=r"corrupt|hash mismatch"):
        load_artifact(out)


def _edit_config(out, fn) -> None:
    doc = json.loads((out / CONFIG_FILE).read_text())
    fn(doc)
    (out / CONFIG_FILE).write_text(json.dumps(doc))


def test_wrong_shapes_against_config(saved) -> None:
    out = saved[0]
    _edit_config(out, lambda d: d["policy"]["unet"].update(down_dims=[16, 64]))
    with pytest.raises(ArtifactError, match="mis-shaped tensors"):
        load_artifact(out)


def test_missing_and_extra_tensors(saved) -> None:
    out = saved[0]
    _edit_config(out, lambda d: d["policy"]["unet"].update(down_dims=[16, 32, 32]))
    with pytest.raises(ArtifactError, match="missing tensors"):
        load_artifact(out)
    _edit_config(out, lambda d: d["policy"]["unet"].update(down_dims=[16]))
    with pytest.raises(ArtifactError, match="unexpected tensors"):
        load_artifact(out)


def test_weights_replaced_by_another_model_give_hash_mismatch(saved, tmp_path) -> None:
    out, cfg, _, _ = saved
    torch.manual_seed(99)
    save_artifact(tmp_path / "other", build_net(cfg), cfg, norms())
    (out / WEIGHTS_FILE).write_bytes((tmp_path / "other" / WEIGHTS_FILE).read_bytes())
    with pytest.raises(ArtifactError, match="hash mismatch"):
        load_artifact(out)


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda d: d["policy"].pop("horizon"), "missing keys"),
        (lambda d: d["policy"].pop("joint_names"), "joint_names"),
        (lambda d: d.pop("normalizers"), "missing key 'normalizers'"),
        (lambda d: d["normalizers"].pop("actions"), "actions"),
        (lambda d: d["normalizers"]["joints"].update(low=[0, 0]), "normalisation"),
        (lambda d: d.pop("weights"), "missing key 'weights'"),
        (lambda d: d.update(format_version=99), "unsupported format version 99"),
        (lambda d: d.update(format="something"), "not a diffusion_controller policy"),
        (lambda d: d["policy"].update(horizon=-1), "horizon"),
    ],
)
def test_bad_config_documents(saved, edit, match) -> None:
    out = saved[0]
    _edit_config(out, edit)
    with pytest.raises(ArtifactError, match=match):
        load_artifact(out)


def test_bad_json(saved) -> None:
    out = saved[0]
    (out / CONFIG_FILE).write_text("{ not json")
    with pytest.raises(ArtifactError, match="not valid JSON"):
        load_config(out)
    (out / CONFIG_FILE).write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ArtifactError, match="not valid JSON"):
        load_config(out)


def test_non_finite_weights_are_refused(tmp_path) -> None:
    cfg = tiny()
    net = build_net(cfg)
    with torch.no_grad():
        next(net.parameters())[0].fill_(float("nan"))
    with pytest.raises(ValueError, match="non-finite"):
        save_artifact(tmp_path, net, cfg, norms())
    # And a NaN written by someone else is caught on load (hash updated to match).
    from safetensors.torch import save_file

    from diffusion_controller.policy.artifact import sha256_file

    good = build_net(cfg)
    save_artifact(tmp_path, good, cfg, norms())
    sd = {k: v.clone() for k, v in good.state_dict().items()}
    key = next(iter(sd))
    sd[key].view(-1)[0] = float("inf")
    save_file(sd, str(tmp_path / WEIGHTS_FILE))
    _edit_config(
        tmp_path, lambda d: d["weights"].update(sha256=sha256_file(tmp_path / WEIGHTS_FILE))
    )
    with pytest.raises(ArtifactError, match="NaN or Inf"):
        load_artifact(tmp_path)


def test_saved_files_get_the_umask(tmp_path) -> None:
    """A model trained by one user is readable by the robot's service user (0644 under 022),
    not mkstemp's 0600."""
    import os
    import stat

    old = os.umask(0o022)
    try:
        save_artifact(tmp_path / "m", build_net(tiny()), tiny(), norms())
    finally:
        os.umask(old)
    files = [p for p in (tmp_path / "m").iterdir() if p.is_file()]
    assert len(files) >= 3
    assert {stat.S_IMODE(p.stat().st_mode) for p in files} == {0o644}
