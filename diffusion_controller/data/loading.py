"""Find and read demonstrations for training: .npz episodes, rosbag2 recordings, LeRobot datasets.

Everything comes out conformed to the policy: joints in the config's order (matched by name),
only the config's cameras, images at the config's size (resized with data/pixels, the same
code the node runs), and a grid spacing equal to `action_dt`. Data that cannot be made to fit is
rejected with a message naming the file, instead of silently training on the wrong thing.
A DataSpec (data/spec.py) says which topics or features of a recording to read; without one the
defaults of before specs existed apply.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from diffusion_controller.data.episode import Episode
from diffusion_controller.data.gripper import GripperConfig
from diffusion_controller.data.pixels import resize_image
from diffusion_controller.data.spec import DataSpec, GripperSpec


class ConformTarget(Protocol):
    """What conforming needs of a policy's configuration (policy.config.PolicyConfig has it;
    named here so the data layer does not import the policy). `dim_names` are the state/action
    columns: the arm's joint names, then the gripper's dims (none without a gripper)."""

    joint_names: list[str]
    cameras: list[str]
    image_size: tuple[int, int]
    action_dt: float
    gripper: GripperConfig | None

    @property
    def dim_names(self) -> list[str]: ...


def _columns(cfg: ConformTarget) -> list[str]:
    return list(getattr(cfg, "dim_names", cfg.joint_names))


def spec_for(cfg: ConformTarget, spec: DataSpec | None) -> DataSpec:
    """The spec with the policy's gripper in it: a model with a gripper reads the gripper's
    default source (commands on /gripper_controller/commands) unless the spec names another;
    a spec whose gripper disagrees with the model's is an error, never silently trained on."""
    spec = spec or DataSpec()
    want = getattr(cfg, "gripper", None)
    if want is None:
        return spec
    if spec.gripper is None:
        return dataclasses.replace(
            spec, gripper=GripperSpec(tuple(want.joints), want.mapping))
    if spec.gripper.config.to_dict() != want.to_dict():
        raise ValueError(
            f"the spec's gripper {spec.gripper.config.to_dict()} differs from the policy's "
            f"{want.to_dict()}"
        )
    return spec


BAG_MARKER = "metadata.yaml"
LEROBOT_MARKER = os.path.join("meta", "info.json")
DT_TOLERANCE = 0.01  # relative


class ReaderUnavailableError(RuntimeError):
    """A recording needs a reader that this installation lacks (raised, never skipped)."""


def discover(path: str | os.PathLike[str]) -> list[tuple[str, str]]:
    """[("npz" | "bag" | "lerobot", path)] under `path`, sorted; bag and LeRobot dataset
    directories are not searched inside."""
    root = os.fspath(path)
    if os.path.isfile(root):
        if root.endswith(".npz"):
            return [("npz", root)]
        raise ValueError(f"{root}: not an episode (.npz) file")
    if not os.path.isdir(root):
        raise FileNotFoundError(f"no such file or directory: {root}")
    if os.path.isfile(os.path.join(root, BAG_MARKER)):
        return [("bag", root)]
    if os.path.isfile(os.path.join(root, LEROBOT_MARKER)):
        return [("lerobot", root)]
    found: list[tuple[str, str]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        bags = [d for d in dirnames if os.path.isfile(os.path.join(dirpath, d, BAG_MARKER))]
        found.extend(("bag", os.path.join(dirpath, d)) for d in bags)
        sets = [d for d in dirnames if os.path.isfile(os.path.join(dirpath, d, LEROBOT_MARKER))]
        found.extend(("lerobot", os.path.join(dirpath, d)) for d in sets)
        dirnames[:] = [
            d for d in dirnames if d not in bags and d not in sets and not d.startswith(".")
        ]
        found.extend(
            ("npz", os.path.join(dirpath, f)) for f in sorted(filenames) if f.endswith(".npz")
        )
    return sorted(found, key=lambda item: item[1])


def camera_topics(cameras: Sequence[str]) -> dict[str, str]:
    """Camera name -> image topic: /<name>/image_raw (so "camera" is /camera/image_raw)."""
    return {c: f"/{c}/image_raw" for c in cameras}


def _read_bag(
    path: str,
    cfg: ConformTarget | None,
    action_dt: float,
    joint_names: Sequence[str] | None,
    cameras: Sequence[str] | None,
    spec: DataSpec | None = None,
) -> list[Episode]:
    try:
        from diffusion_controller.data import rosbag_io
    except ImportError as exc:
        raise ReaderUnavailableError(
            f"{path} is a rosbag2 recording, but diffusion_controller.data.rosbag_io cannot be "
            f"imported ({exc}); convert the recording to .npz episodes or install the package "
            "with its 'sim' extra (rosbags)"
        ) from exc
    if cfg is not None:
        return rosbag_io.read_episodes(
            path,
            action_dt=cfg.action_dt,
            joint_names=list(cfg.joint_names),
            cameras=camera_topics(cfg.cameras),
            image_size=tuple(cfg.image_size),
            spec=spec_for(cfg, spec),
        )
    if not joint_names:
        raise ValueError(
            "reading a rosbag2 recording needs the joint names (commands carry none): pass "
            "a PolicyConfig or joint_names"
        )
    return rosbag_io.read_episodes(
        path,
        action_dt=action_dt,
        joint_names=list(joint_names),
        cameras=camera_topics(cameras) if cameras else None,
        spec=spec,
    )


def _read_lerobot(
    path: str,
    cfg: ConformTarget | None,
    action_dt: float,
    joint_names: Sequence[str] | None,
    cameras: Sequence[str] | None,
    spec: DataSpec | None,
) -> list[Episode]:
    from diffusion_controller.data.lerobot import read_lerobot

    if (spec is not None and spec.gripper is not None) or getattr(cfg, "gripper", None):
        raise ValueError(
            f"{path}: a gripper is read from rosbag2 recordings only; for a LeRobot dataset "
            "train on its state feature's joints without a gripper section"
        )
    if cfg is not None:
        return read_lerobot(path, cfg.action_dt, list(cfg.joint_names), list(cfg.cameras), spec)
    return read_lerobot(path, action_dt, joint_names, cameras, spec)


def conform_episode(ep: Episode, cfg: ConformTarget, source: str = "episode") -> Episode:
    """Reorder/select joints (and gripper dims) and cameras, resize images, check the grid."""
    want = _columns(cfg)
    missing = [n for n in want if n not in ep.joint_names]
    if missing:
        hint = ("; a gripper is read with a `gripper` section in the data spec"
                if getattr(cfg, "gripper", None) is not None else "")
        raise ValueError(
            f"{source}: joints {missing} are missing (episode has {ep.joint_names}){hint}")
    cols = [ep.joint_names.index(n) for n in want]
    cams = [c for c in cfg.cameras if c not in ep.images]
    if cams:
        raise ValueError(f"{source}: cameras {cams} are missing (episode has {sorted(ep.images)})")
    if len(ep) > 1 and abs(ep.dt - cfg.action_dt) > DT_TOLERANCE * cfg.action_dt:
        raise ValueError(
            f"{source}: grid spacing {ep.dt:.4f} s differs from the policy's action_dt "
            f"{cfg.action_dt} s; resample the recording at action_dt"
        )
    images = {}
    size = tuple(cfg.image_size)
    for cam in cfg.cameras:
        frames = ep.images[cam]
        if tuple(frames.shape[1:3]) != size:
            frames = (
                np.stack([resize_image(f, size) for f in frames])
                if len(frames)
                else np.zeros((0, *size, 3), np.uint8)
            )
        images[cam] = frames
    return Episode(
        joint_names=want,
        stamps=ep.stamps,
        joints=ep.joints[:, cols],
        actions=ep.actions[:, cols],
        images=images,
        meta={**ep.meta, "source": source},
    )


def load_episodes(
    path: str | os.PathLike[str],
    cfg: ConformTarget | None = None,
    *,
    action_dt: float = 0.1,
    joint_names: Sequence[str] | None = None,
    cameras: Sequence[str] | None = None,
    skip_bad: bool = False,
    spec: DataSpec | None = None,
) -> list[Episode]:
    """Every episode under `path` (a .npz file, a rosbag2 directory, a LeRobot v3 dataset
    directory, or a folder of these), bags and datasets read as `spec` says.

    With `cfg`, episodes are conformed to it (see conform_episode). Without, they are returned as
    read, with joints reordered to the first episode's order, and bags are read at `action_dt`
    with `joint_names` and `cameras` (default: the one "camera" on /camera/image_raw).
    A file that cannot be read raises ValueError naming it, or with `skip_bad` is skipped with a
    warning. Empty episodes are skipped with a warning. A bag split by a marker topic, and a
    LeRobot dataset, yield several episodes, named `<path>#episode_<k>` in their meta.
    """
    items = discover(path)
    if not items:
        raise ValueError(
            f"no episodes (*.npz, rosbag2 directories or LeRobot datasets) under {os.fspath(path)}"
        )
    episodes: list[Episode] = []
    for kind, item in items:
        try:
            if kind == "npz":
                read = [Episode.load(item)]
            elif kind == "bag":
                read = _read_bag(item, cfg, action_dt, joint_names, cameras, spec)
            else:
                read = _read_lerobot(item, cfg, action_dt, joint_names, cameras, spec)
            kept = []
            for k, ep in enumerate(read):
                name = item if len(read) == 1 and kind != "lerobot" else f"{item}#episode_{k}"
                name = str(ep.meta.get("source", name)) if kind == "lerobot" else name
                if len(ep) == 0:
                    warnings.warn(f"{name}: empty episode skipped", stacklevel=2)
                    continue
                if cfg is not None:
                    ep = conform_episode(ep, cfg, source=name)
                elif episodes or kept:
                    ep = _reorder_like(ep, (episodes or kept)[0], name)
                else:
                    ep.meta = {**ep.meta, "source": name}
                kept.append(ep)
        except ReaderUnavailableError:
            raise
        except Exception as exc:  # zip, JSON, shape and value errors all mean "unusable file"
            if not skip_bad:
                msg = str(exc) if item in str(exc) else f"{item}: cannot use episode: {exc}"
                raise ValueError(msg) from exc
            warnings.warn(f"{item}: skipped ({exc})", stacklevel=2)
            continue
        episodes.extend(kept)
    if not episodes:
        raise ValueError(f"no usable episodes under {os.fspath(path)}")
    return episodes


def _reorder_like(ep: Episode, ref: Episode, source: str) -> Episode:
    if list(ep.joint_names) == list(ref.joint_names):
        ep.meta = {**ep.meta, "source": source}
        return ep
    if sorted(ep.joint_names) != sorted(ref.joint_names):
        raise ValueError(
            f"joints {ep.joint_names} differ from the first episode's {ref.joint_names}"
        )
    cols = [ep.joint_names.index(n) for n in ref.joint_names]
    return Episode(
        list(ref.joint_names),
        ep.stamps,
        ep.joints[:, cols],
        ep.actions[:, cols],
        ep.images,
        {**ep.meta, "source": source},
    )


def summarize(episodes: list[Episode]) -> dict[str, object]:
    """Counts for model cards and logs."""
    frames = sum(len(ep) for ep in episodes)
    return {
        "episodes": len(episodes),
        "frames": frames,
        "duration_s": float(sum(len(ep) * ep.dt for ep in episodes)),
        "joint_names": list(episodes[0].joint_names) if episodes else [],
        "cameras": sorted(episodes[0].images) if episodes else [],
        "image_shape": (
            list(next(iter(episodes[0].images.values())).shape[1:])
            if episodes and episodes[0].images
            else []
        ),
    }
