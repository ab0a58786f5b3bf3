"""LeRobot v3 datasets as training data (`train --data DIR` with a LeRobot dataset root).

Which writer: lerobot does NOT install beside torch 2.13 (lerobot 0.4.4 requires torch<2.11, and
pip replaces torch 2.13.0 with 2.10.0 to install it; checked in a separate venv). So the dataset
that CI reads is written here by `write_v3`, to LeRobot's published v3.0 format (meta/info.json,
meta/episodes/chunk-000/file-000.parquet, data/chunk-000/file-000.parquet, one mp4 per camera
holding every episode back to back). `test_reads_a_dataset_written_by_lerobot` writes one with
lerobot's own LeRobotDataset API and skips where lerobot is absent (as in this project's venv).
"""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
av = pytest.importorskip("av")

from diffusion_controller.data.lerobot import read_lerobot  # noqa: E402
from diffusion_controller.data.loading import discover, load_episodes  # noqa: E402
from diffusion_controller.data.spec import parse_spec  # noqa: E402

NAMES = [f"fr3_joint{i}" for i in range(1, 8)]
CAM = "observation.images.wrist"
FPS = 10
H, W = 32, 48


def frame_of(e: int, k: int) -> np.ndarray:
    """Uniform colour that encodes (episode, frame) coarsely enough to survive h264."""
    img = np.empty((H, W, 3), dtype=np.uint8)
    img[..., 0], img[..., 1], img[..., 2] = 20 * k, 120 + 60 * e, 60
    return img


def state_of(e: int, k: int) -> np.ndarray:
    return np.array([e + 0.1 * k + 0.01 * j for j in range(7)], dtype=np.float32)


def _codec() -> str:
    for name in ("libx264", "h264", "mpeg4"):
        try:
            av.codec.Codec(name, "w")
            return name
        except Exception:  # not built into this PyAV wheel
            continue
    pytest.skip("PyAV has no usable video encoder")


def _png(img: np.ndarray) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def write_v3(
    root: Path, lengths: list[int], state_names: list[str], image_feature: bool = False
) -> None:
    """A LeRobot v3.0 dataset with `len(lengths)` episodes, to the published format; with
    `image_feature` also an `observation.images.scene` camera stored as PNG in the parquet."""
    (root / "meta" / "episodes" / "chunk-000").mkdir(parents=True)
    (root / "data" / "chunk-000").mkdir(parents=True)
    vdir = root / "videos" / CAM / "chunk-000"
    vdir.mkdir(parents=True)
    order = [NAMES.index(n) for n in state_names]
    cols: dict[str, list] = {k: [] for k in ("state", "action", "ts", "fi", "ei", "idx")}
    eps = []
    with av.open(str(vdir / "file-000.mp4"), "w") as out:
        stream = out.add_stream(_codec(), rate=FPS)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        stream.time_base = Fraction(1, FPS)
        n = 0
        for e, length in enumerate(lengths):
            eps.append((e, length, n, n + length, n / FPS, (n + length) / FPS))
            for k in range(length):
                frame = av.VideoFrame.from_ndarray(frame_of(e, k), format="rgb24")
                frame.pts = n + k
                for packet in stream.encode(frame):
                    out.mux(packet)
                cols["state"].append(state_of(e, k)[order].tolist())
                cols["action"].append((state_of(e, k + 1)[order]).tolist())
                cols["ts"].append(k / FPS)
                cols["fi"].append(k)
                cols["ei"].append(e)
                cols["idx"].append(n + k)
            n += length
        for packet in stream.encode():
            out.mux(packet)
    vec = pa.list_(pa.float32(), 7)
    table = pa.table(
        {
            "observation.state": pa.array(cols["state"], type=vec),
            "action": pa.array(cols["action"], type=vec),
            "timestamp": pa.array(cols["ts"], type=pa.float32()),
            "frame_index": pa.array(cols["fi"], type=pa.int64()),
            "episode_index": pa.array(cols["ei"], type=pa.int64()),
            "index": pa.array(cols["idx"], type=pa.int64()),
            "task_index": pa.array([0] * len(cols["idx"]), type=pa.int64()),
        }
    )
    if image_feature:
        scene = [
            {"bytes": _png(frame_of(e, k)[:, ::-1].copy()), "path": None}
            for e, length in enumerate(lengths)
            for k in range(length)
        ]
        table = table.append_column("observation.images.scene", pa.array(scene))
    pq.write_table(table, root / "data" / "chunk-000" / "file-000.parquet")
    v = f"videos/{CAM}"
    rows = {
        "episode_index": [r[0] for r in eps],
        "tasks": [["reach the target"] for _ in eps],
        "length": [r[1] for r in eps],
        "data/chunk_index": [0] * len(eps),
        "data/file_index": [0] * len(eps),
        "dataset_from_index": [r[2] for r in eps],
        "dataset_to_index": [r[3] for r in eps],
        f"{v}/chunk_index": [0] * len(eps),
        f"{v}/file_index": [0] * len(eps),
        f"{v}/from_timestamp": [r[4] for r in eps],
        f"{v}/to_timestamp": [r[5] for r in eps],
        "meta/episodes/chunk_index": [0] * len(eps),
        "meta/episodes/file_index": [0] * len(eps),
    }
    pq.write_table(pa.table(rows), root / "meta" / "episodes" / "chunk-000" / "file-000.parquet")
    pq.write_table(
        pa.table({"task_index": [0], "task": ["reach the target"]}), root / "meta" / "tasks.parquet"
    )
    scalar = {"dtype": "int64", "shape": [1], "names": None}
    info = {
        "codebase_version": "v3.0",
        "robot_type": "fr3",
        "total_episodes": len(lengths),
        "total_frames": sum(lengths),
        "total_tasks": 1,
        "chunks_size": 1000,
        "data_files_size_in_mb": 100,
        "video_files_size_in_mb": 200,
        "fps": FPS,
        "splits": {"train": f"0:{len(lengths)}"},
        "data_path": "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet",
        "video_path": "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4",
        "features": {
            "observation.state": {"dtype": "float32", "shape": [7], "names": state_names},
            "action": {"dtype": "float32", "shape": [7], "names": state_names},
            CAM: {
                "dtype": "video",
                "shape": [H, W, 3],
                "names": ["height", "width", "channels"],
                "info": {"video.fps": FPS, "video.codec": _codec(), "video.pix_fmt": "yuv420p"},
            },
            **(
                {"observation.images.scene": {"dtype": "image", "shape": [H, W, 3], "names": None}}
                if image_feature
                else {}
            ),
            "timestamp": {"dtype": "float32", "shape": [1], "names": None},
            "frame_index": scalar,
            "episode_index": scalar,
            "index": scalar,
            "task_index": scalar,
        },
    }
    (root / "meta" / "info.json").write_text(json.dumps(info, indent=2))


def _check(eps: list, lengths: list[int]) -> None:
    assert [len(e) for e in eps] == lengths
    for e, ep in enumerate(eps):
        assert ep.joint_names == NAMES
        want = np.stack([state_of(e, k) for k in range(lengths[e])])
        np.testing.assert_allclose(ep.joints, want, atol=1e-6)
        np.testing.assert_allclose(ep.actions[:-1], want[1:], atol=1e-6)
        img = ep.images["wrist"]
        assert img.shape == (lengths[e], H, W, 3)
        for k in range(lengths[e]):  # lossy video: the right frame, within codec error
            err = np.abs(img[k].astype(int) - frame_of(e, k).astype(int)).mean()
            assert err < 6, (e, k, err)


def test_reads_a_dataset_written_to_the_v3_spec(tmp_path: Path) -> None:
    root = tmp_path / "fr3_reach"
    write_v3(root, [6, 9], NAMES[::-1])  # state columns stored in reverse: matched by name
    assert discover(tmp_path) == [("lerobot", str(root))]
    eps = read_lerobot(root, 1.0 / FPS, NAMES)
    _check(eps, [6, 9])
    assert eps[1].meta["task_text"] == "reach the target"
    # The measured source: the state one frame ahead (lead_s defaults to one action_dt).
    meas = read_lerobot(root, 0.1, NAMES, spec=parse_spec({"action": {"source": "measured"}}))
    assert [len(e) for e in meas] == [5, 8]
    np.testing.assert_allclose(meas[0].actions, meas[0].joints + 0.1, atol=1e-5)
    # Through load_episodes (what `train --data` calls), camera chosen by name.
    loaded = load_episodes(tmp_path, action_dt=0.1, joint_names=NAMES, cameras=["wrist"])
    assert [e.meta["source"] for e in loaded] == [f"{root}#episode_0", f"{root}#episode_1"]
    # A spec maps other feature names; a missing one is named.
    with pytest.raises(ValueError, match=r"features \['observation.images.top'\] missing"):
        read_lerobot(
            root, 0.1, NAMES, spec=parse_spec({"cameras": {"top": "observation.images.top"}})
        )
    with pytest.raises(ValueError, match="no JointTrajectory"):
        read_lerobot(root, 0.1, NAMES, spec=parse_spec({"action": {"source": "trajectory"}}))
    with pytest.raises(ValueError, match=r"joints \['elbow'\] not in observation.state"):
        read_lerobot(root, 0.1, ["elbow"])


def test_image_features_embedded_in_the_parquet(tmp_path: Path) -> None:
    root = tmp_path / "with_images"
    write_v3(root, [4, 5], NAMES, image_feature=True)
    eps = read_lerobot(root, 0.1, NAMES)
    assert sorted(eps[0].images) == ["scene", "wrist"]
    for e, ep in enumerate(eps):
        for k in range(len(ep)):  # png: lossless
            np.testing.assert_array_equal(ep.images["scene"][k], frame_of(e, k)[:, ::-1])


def test_older_formats_are_refused(tmp_path: Path) -> None:
    root = tmp_path / "old"
    write_v3(root, [3], NAMES)
    info = json.loads((root / "meta" / "info.json").read_text())
    info["codebase_version"] = "v2.1"
    (root / "meta" / "info.json").write_text(json.dumps(info))
    with pytest.raises(ValueError, match=r"only v3\.x is read"):
        read_lerobot(root, 0.1)


def test_reads_a_dataset_written_by_lerobot(tmp_path: Path) -> None:
    """Skips unless lerobot is importable (it is not beside torch 2.13; see the module doc)."""
    pytest.importorskip("lerobot")
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    feats = {
        "observation.state": {"dtype": "float32", "shape": (7,), "names": NAMES},
        "action": {"dtype": "float32", "shape": (7,), "names": NAMES},
        CAM: {"dtype": "video", "shape": (H, W, 3), "names": ["height", "width", "channels"]},
    }
    root = tmp_path / "by_lerobot"
    ds = LeRobotDataset.create(
        "local/fr3_reach", fps=FPS, features=feats, root=root, robot_type="fr3", vcodec="h264"
    )
    for e, length in enumerate([6, 9]):
        for k in range(length):
            ds.add_frame(
                {
                    "observation.state": state_of(e, k),
                    "action": state_of(e, k + 1),
                    CAM: frame_of(e, k),
                    "task": "reach the target",
                }
            )
        ds.save_episode()
    ds.finalize()
    _check(read_lerobot(root, 1.0 / FPS, NAMES), [6, 9])
