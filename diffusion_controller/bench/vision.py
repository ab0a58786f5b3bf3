"""`diffusion-controller bench vision`: does the policy look, and does it move as far as the demos?

    diffusion-controller bench vision --model models/pick_place_diffusion --data val_demos \
        --spec config/pick_place_data.yaml

A policy can fit its demonstrations while hardly using its camera: along an episode the joint
state already says where the arm is heading, and only at the start (the arm at rest, the same for
every episode) must the image say where to go. This bench measures that directly on held-out
recordings, offline (no simulator, no DDS): at frame F of every episode it gives the policy the
joint states of the *first* episode and the camera frames of episode k, samples a chunk, and
compares the chunk's last action with the demonstration of episode k, per action dimension, across
episodes:

- `gain`: the slope of predicted on demonstrated (1: moves as the demos do for what it sees; 0: the
  same chunk whatever the camera shows, i.e. blind),
- `corr`: their correlation (high with a low gain: it sees, but answers too weakly),
- `spread`: the demonstrations' standard deviation (rad or m): which dimensions the image decides.

The summary row is the spread-weighted mean gain over the arm's joints. With the episode's own
joint states (`own`), `chunk_error` is the median over episodes of the chunk's largest joint error
against the demonstration: the open-loop fit. Frame 0 is where the image alone decides; a frame
where the states differ measures a mixture, so read it as a trend. `--checkpoint` reads the EMA
weights of a training checkpoint (out/checkpoints/latest.pt) into the artifact's network, to follow
a run while it trains.
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np

from diffusion_controller.report import format_table, write_json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("vision", help="does the policy use its camera (offline, held-out demos)")
    p.add_argument("--model", required=True, help="model artifact directory")
    p.add_argument("--data", required=True, help="held-out recordings (as `train --data`)")
    p.add_argument("--spec", metavar="FILE", help="data spec (YAML), as for train")
    p.add_argument("--checkpoint", metavar="PT",
                   help="training checkpoint whose EMA weights to use")  # fmt: skip
    p.add_argument("--frames", default="0", help="comma list of frame indices (default 0)")
    p.add_argument("--episodes", type=int, default=20, help="episodes to use (default 20)")
    p.add_argument("--seed", type=int, default=0, help="sampling noise seed")
    p.add_argument("--json", metavar="PATH", help="also write the rows as JSON")
    p.set_defaults(func=run)


def load_policy(model: str, checkpoint: str | None) -> tuple[Any, Any, dict[str, Any]]:
    """(config, network in eval mode, normalizers) of an artifact, optionally with a checkpoint's
    EMA weights and normalizers instead of its own."""
    import torch

    from diffusion_controller.policy.artifact import load_artifact
    from diffusion_controller.policy.model import build_net
    from diffusion_controller.policy.normalize import normalizers_from_dict

    art = load_artifact(model)
    if checkpoint is None:
        return art.config, art.net, dict(art.normalizers)
    ckpt = torch.load(checkpoint, map_location="cpu", weights_only=False)
    if ckpt.get("policy") != art.config.to_dict():
        raise ValueError(f"{checkpoint} was written for another policy config than {model}")
    net = build_net(art.config)
    net.load_state_dict(ckpt["ema"]["model"])
    norms = normalizers_from_dict(ckpt["normalizers"], dim=art.config.action_dim)
    return art.config, net.eval(), norms


def measure(cfg: Any, net: Any, norms: dict[str, Any], episodes: list, frames: list[int],
            seed: int = 0) -> list[dict[str, Any]]:
    """One row per frame: gain, corr and spread per action dimension, weighted gain, chunk_error."""
    import torch

    from diffusion_controller.policy.dataset import ChunkDataset
    from diffusion_controller.policy.sampler import DDIMSampler

    ds = ChunkDataset(episodes, cfg, norms, augment=False)
    sampler = DDIMSampler(cfg.diffusion) if cfg.kind == "diffusion" else None
    act = norms["actions"]
    starts = np.flatnonzero(ds.index[:, 1] == 0)
    lengths = [len(ep) for ep in episodes]

    def chunk(images: Any, joints: Any) -> np.ndarray:  # [H, D], unnormalised
        with torch.no_grad():
            cond = net.encode(images[None], joints[None])
            if sampler is None:
                x = net(cond)
            else:
                x = sampler.sample(net, cond, generator=torch.Generator().manual_seed(seed))
        return act.unnormalize(x[0].numpy())

    arm = len(cfg.joint_names)
    rows = []
    for f in frames:
        usable = [int(s) + f for s, n in zip(starts, lengths, strict=True) if f < n]
        if len(usable) < 3:
            raise ValueError(f"frame {f}: fewer than 3 episodes are that long")
        base = ds[usable[0]]
        pred, true, errors = [], [], []
        for idx in usable:
            item = ds[idx]
            pred.append(chunk(item["images"], base["joints"])[-1])
            truth = act.unnormalize(item["actions"].numpy())
            true.append(truth[-1])
            own = chunk(item["images"], item["joints"])
            errors.append(float(np.abs(own[:, :arm] - truth[:, :arm]).max()))
        p, t = np.asarray(pred), np.asarray(true)
        spread = t.std(axis=0)
        gains, corrs = [], []
        for d in range(t.shape[1]):
            var = float(np.var(t[:, d]))
            cov = float(np.mean((p[:, d] - p[:, d].mean()) * (t[:, d] - t[:, d].mean())))
            gains.append(cov / var if var > 1e-12 else float("nan"))
            denom = float(p[:, d].std() * t[:, d].std())
            corrs.append(cov / denom if denom > 1e-12 else float("nan"))
        w = spread[:arm] / max(float(spread[:arm].sum()), 1e-12)
        rows.append({
            "frame": f, "episodes": len(usable),
            "gain": float(np.nansum(np.asarray(gains[:arm]) * w)),
            "chunk_error": float(np.median(errors)),
            "dims": [{"dim": cfg.dim_names[d] if hasattr(cfg, "dim_names") else str(d),
                      "gain": gains[d], "corr": corrs[d], "spread": float(spread[d])}
                     for d in range(t.shape[1])],
        })  # fmt: skip
    return rows


def run(args: argparse.Namespace) -> int:
    from diffusion_controller.data.loading import load_episodes
    from diffusion_controller.data.spec import load_spec

    try:
        frames = [int(x) for x in args.frames.split(",") if x.strip()]
        if not frames or min(frames) < 0 or args.episodes < 3:
            raise ValueError("--frames must be indices >= 0 and --episodes at least 3")
        cfg, net, norms = load_policy(args.model, args.checkpoint)
        episodes = load_episodes(args.data, cfg, spec=load_spec(args.spec))[: args.episodes]
        rows = measure(cfg, net, norms, episodes, frames, args.seed)
    except (ValueError, FileNotFoundError) as exc:
        print(f"bench vision: {exc}")
        return 2
    table = []
    for r in rows:
        top = max(r["dims"], key=lambda d: d["spread"])
        table.append({"frame": r["frame"], "episodes": r["episodes"], "gain": round(r["gain"], 3),
                      "chunk_error_rad": round(r["chunk_error"], 4),
                      "widest_dim": top["dim"], "its_gain": round(top["gain"], 3),
                      "its_corr": round(top["corr"], 3), "its_spread": round(top["spread"], 4)})
    print(format_table(table, title=f"vision: {args.model}"))
    if args.json:
        write_json(args.json, {"model": args.model, "checkpoint": args.checkpoint, "rows": rows})
    return 0
