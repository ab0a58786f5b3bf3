"""LeRobot datasets (format v3.0) as training data, read without the lerobot package.

Layout read (LeRobot's published v3 format): meta/info.json (codebase_version "v3.0", fps,
features, data_path and video_path templates), meta/episodes/chunk-*/file-*.parquet (one row per
episode: episode_index, tasks, data/chunk_index, data/file_index, videos/<key>/chunk_index,
videos/<key>/file_index, videos/<key>/from_timestamp), data/chunk-*/file-*.parquet (one row per
frame: the features plus timestamp, frame_index, episode_index), and videos/<key>/... mp4 files
holding many episodes back to back, an episode's frame at `from_timestamp + timestamp`.

The spec maps features instead of topics: joint_states.topic (default observation.state),
action.topic (default action; source commands) or action.source measured (the state lead_s
ahead), cameras {name: feature} (default: every video or image feature, named by the part after
"observation.images."). Joints are matched by the state feature's names; frames are resampled
onto the policy's `action_dt` grid exactly as bag streams are. Needs pyarrow and PyAV (`av`):
the package's `data` extra.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from diffusion_controller.data import align
from diffusion_controller.data.episode import Episode
from diffusion_controller.data.spec import DataSpec

INFO = Path("meta") / "info.json"
STATE_KEY = "observation.state"
ACTION_KEY = "action"
CAMERA_PREFIX = "observation.images."
_NS = align.NS


def is_lerobot_dir(path: str | os.PathLike[str]) -> bool:
    """True for a directory holding meta/info.json (a LeRobot dataset root)."""
    return (Path(path) / INFO).is_file()


def read_info(path: str | os.PathLike[str]) -> dict[str, Any]:
    """meta/info.json, checked to be format v3 (ValueError naming the file otherwise)."""
    p = Path(path) / INFO
    try:
        info = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{p}: cannot read LeRobot info: {exc}") from exc
    version = str(info.get("codebase_version", ""))
    if not version.startswith("v3"):
        raise ValueError(
            f"{p}: LeRobot dataset format {version or 'unknown'}; only v3.x is read "
            "(convert with lerobot's convert_dataset_v21_to_v30)"
        )
    for key in ("fps", "features", "data_path"):
        if key not in info:
            raise ValueError(f"{p}: '{key}' is missing")
    return info


def feature_names(feature: Mapping[str, Any]) -> list[str] | None:
    """A feature's per-dimension names (a list, or the first list of a dict of lists)."""
    names = feature.get("names")
    if isinstance(names, dict):
        names = next((v for v in names.values() if isinstance(v, list)), None)
    return [str(n) for n in names] if isinstance(names, list) else None


def camera_features(info: Mapping[str, Any]) -> dict[str, str]:
    """Camera name -> feature key for every video or image feature."""
    out = {}
    for key, feat in info["features"].items():
        if feat.get("dtype") in ("video", "image"):
            out[key[len(CAMERA_PREFIX) :] if key.startswith(CAMERA_PREFIX) else key] = key
    return out


def _pq() -> Any:
    try:
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise ValueError(
            "reading a LeRobot dataset needs pyarrow: pip install 'diffusion_controller[data]'"
        ) from exc
    return pq


def episodes_table(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Rows of meta/episodes/*/*.parquet, by episode_index."""
    files = sorted((Path(path) / "meta" / "episodes").glob("chunk-*/file-*.parquet"))
    if not files:
        raise ValueError(f"{path}: no meta/episodes/chunk-*/file-*.parquet (not a v3 dataset?)")
    pq = _pq()
    rows: list[dict[str, Any]] = []
    for f in files:
        rows.extend(pq.read_table(f).to_pylist())
    return sorted(rows, key=lambda r: int(r["episode_index"]))


def _columns(
    path: Path, info: Mapping[str, Any], rows: Sequence[Mapping[str, Any]], keys: list[str]
) -> dict[int, dict[str, Any]]:
    """episode_index -> {column: values} for the episodes in `rows` (each data file read once)."""
    pq = _pq()
    by_file: dict[str, list[int]] = {}
    for r in rows:
        rel = info["data_path"].format(
            chunk_index=int(r["data/chunk_index"]), file_index=int(r["data/file_index"])
        )
        by_file.setdefault(rel, []).append(int(r["episode_index"]))
    out: dict[int, dict[str, Any]] = {}
    for rel, eps in by_file.items():
        table = pq.read_table(path / rel, columns=[*keys, "timestamp", "episode_index"])
        col_ep = np.asarray(table.column("episode_index").to_pylist(), dtype=np.int64)
        cols = {k: table.column(k).to_pylist() for k in [*keys, "timestamp"]}
        for e in eps:
            idx = np.flatnonzero(col_ep == e)
            out[e] = {k: [v[i] for i in idx] for k, v in cols.items()}
    return out


def _video_frames(file: Path, wanted: np.ndarray, tol: float) -> dict[int, np.ndarray]:
    """Decode `file` once, keeping the frame nearest each wanted time (s); key: index in wanted."""
    try:
        import av
    except ImportError as exc:
        raise ValueError(
            "decoding LeRobot videos needs PyAV: pip install 'diffusion_controller[data]'"
        ) from exc
    w, inverse = np.unique(np.asarray(wanted, dtype=np.float64), return_inverse=True)
    best: dict[int, tuple[float, np.ndarray]] = {}
    with av.open(str(file)) as container:
        stream = container.streams.video[0]
        for frame in container.decode(stream):
            t = float(frame.time if frame.time is not None else 0.0)
            j = int(np.searchsorted(w, t))
            hits = [k for k in (j - 1, j) if 0 <= k < len(w) and abs(w[k] - t) <= tol]
            if not hits:
                continue
            rgb = None
            for k in hits:
                if k not in best or abs(w[k] - t) < best[k][0]:
                    rgb = frame.to_ndarray(format="rgb24") if rgb is None else rgb
                    best[k] = (abs(w[k] - t), rgb)
    missing = [float(w[k]) for k in range(len(w)) if k not in best]
    if missing:
        raise ValueError(f"{file}: no frame within {tol * 1e3:.0f} ms of t = {missing[:3]} s")
    return {i: best[int(k)][1] for i, k in enumerate(np.ravel(inverse))}


def _image_cells(values: Sequence[Any], key: str) -> list[np.ndarray]:
    from PIL import Image

    out = []
    for v in values:
        data = v.get("bytes") if isinstance(v, dict) else None
        if not data:
            raise ValueError(f"image feature {key}: a frame carries no embedded bytes")
        with Image.open(io.BytesIO(data)) as img:
            out.append(np.asarray(img.convert("RGB"), dtype=np.uint8))
    return out


def plan_features(
    info: Mapping[str, Any],
    spec: DataSpec | None,
    cameras: Sequence[str] | Mapping[str, str] | None,
    where: str,
) -> tuple[str, str | None, dict[str, str]]:
    """(state key, action key or None for measured, camera name -> feature key)."""
    spec = spec or DataSpec()
    feats = info["features"]
    state = spec.joint_topic or STATE_KEY
    if spec.action.source == "trajectory":
        raise ValueError(
            f"{where}: a LeRobot dataset holds no JointTrajectory messages; use action.source "
            "commands (a feature, default 'action') or measured"
        )
    action = None if spec.action.source == "measured" else (spec.action.topic or ACTION_KEY)
    found = camera_features(info)
    if spec.cameras is not None:
        cams = dict(spec.cameras)
    elif isinstance(cameras, Mapping):
        cams = dict(cameras)
    elif cameras:
        cams = {c: found.get(c, CAMERA_PREFIX + c) for c in cameras}
    else:
        cams = found
    missing = [k for k in [state, action, *cams.values()] if k is not None and k not in feats]
    if missing:
        raise ValueError(f"{where}: features {missing} missing; it has {sorted(feats)}")
    return state, action, cams


def read_lerobot(
    path: str | os.PathLike[str],
    action_dt: float,
    joint_names: Sequence[str] | None = None,
    cameras: Sequence[str] | Mapping[str, str] | None = None,
    spec: DataSpec | None = None,
) -> list[Episode]:
    """Every episode of a LeRobot v3 dataset on an `action_dt` grid (see the module doc).

    `joint_names` None takes the state feature's names (or joint_0..N-1 when it has none).
    """
    root = Path(path)
    info = read_info(root)
    state, action, cams = plan_features(info, spec, cameras, str(root))
    feats = info["features"]
    names_in = feature_names(feats[state])
    dim = int(np.prod(feats[state].get("shape", [len(names_in or [])])))
    names_in = names_in if names_in and len(names_in) == dim else [f"joint_{i}" for i in range(dim)]
    names = list(joint_names) if joint_names else list(names_in)
    unknown = [n for n in names if n not in names_in]
    if unknown:
        raise ValueError(f"{root}: joints {unknown} not in {state} (it names {names_in})")
    cols_idx = [names_in.index(n) for n in names]
    if action is not None:
        act_names = feature_names(feats[action])
        if act_names and len(act_names) == dim and act_names != names_in:
            act_idx = [act_names.index(n) if n in act_names else -1 for n in names]
            if min(act_idx) < 0:
                raise ValueError(f"{root}: {action} names {act_names} lack some of {names}")
        else:
            act_idx = cols_idx
    lead = (spec or DataSpec()).action.resolved_lead(action_dt)
    rows = episodes_table(root)
    video_keys = [k for k in cams.values() if feats[k].get("dtype") == "video"]
    image_keys = [k for k in cams.values() if feats[k].get("dtype") != "video"]
    keys = [state, *([action] if action else []), *image_keys]
    data = _columns(root, info, rows, keys)
    step = round(action_dt * _NS)
    plans = []
    for r in rows:
        e = int(r["episode_index"])
        # float32 seconds on disk: snapped to whole microseconds so 0.1 s stays 0.1 s
        secs = np.asarray(data[e]["timestamp"], dtype=np.float64)
        t = np.round(secs * 1e6).astype(np.int64) * 1000
        if len(t) == 0:
            continue
        grid = align.grid_between(int(t[0]), int(t[-1] - round(lead * _NS)), step)
        if len(grid):
            plans.append((r, t, grid, align.newest(grid, t)))
    frames: dict[tuple[int, str], list[np.ndarray]] = {}
    tol = 0.5 / float(info["fps"])
    for key in video_keys:
        by_file: dict[Path, list[tuple[int, np.ndarray]]] = {}
        for r, t, _, pick in plans:
            rel = info["video_path"].format(
                video_key=key,
                chunk_index=int(r[f"videos/{key}/chunk_index"]),
                file_index=int(r[f"videos/{key}/file_index"]),
            )
            at = float(r[f"videos/{key}/from_timestamp"]) + t[pick] / _NS
            by_file.setdefault(root / rel, []).append((int(r["episode_index"]), at))
        for file, items in by_file.items():
            wanted = np.concatenate([a for _, a in items])
            got = _video_frames(file, wanted, tol)
            k = 0
            for e, a in items:
                frames[(e, key)] = [got[k + i] for i in range(len(a))]
                k += len(a)
    episodes = []
    for r, t, grid, pick in plans:
        e = int(r["episode_index"])
        q = np.asarray(data[e][state], dtype=np.float64)[:, cols_idx]
        if action is None:
            acts = align.interp(grid + round(lead * _NS), t, q)
        else:
            a = np.asarray(data[e][action], dtype=np.float64)[:, act_idx]
            acts = a[align.newest(grid + round(lead * _NS), t)]
        images = {}
        for cam, key in cams.items():
            if key in video_keys:
                images[cam] = np.stack(frames[(e, key)])
            else:
                cells = _image_cells(data[e][key], key)
                images[cam] = np.stack([cells[int(i)] for i in pick])
        tasks = r.get("tasks") or []
        episodes.append(
            Episode(
                joint_names=names,
                stamps=(grid - grid[0]) / _NS,
                joints=align.interp(grid, t, q),
                actions=acts,
                images=images,
                meta={
                    "source": f"{root}#episode_{e}",
                    "format": f"lerobot {info.get('codebase_version')}",
                    "episode_index": e,
                    "action_source": "measured" if action is None else "commands",
                    "action_topic": action or state,
                    "lead_s": lead,
                    "task_text": str(tasks[0]) if tasks else "",
                    "rates_hz": {"joint_states": align.rate_hz(t)},
                },
            )
        )
    if not episodes:
        raise ValueError(f"{root}: no episode long enough for one {action_dt} s step")
    return episodes
