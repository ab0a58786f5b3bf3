"""The Markdown model card (MODEL_CARD.md) of a model artifact, rendered from its config.json.

Kept apart from artifact.py, which writes and paranoidly reads the weights and the config: the card
is for people (what the model is, its interface, its network, the action range it clips to, and
the trainer's notes), so nothing loads it back and nothing here needs to be strict.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from diffusion_controller.data.gripper import GripperConfig


def _gripper_lines(gripper: Mapping[str, Any] | None) -> list[str]:
    if not gripper:
        return []
    g = GripperConfig.from_dict(gripper)
    what = (
        "the width in m (sum of the finger positions)"
        if g.mapping == "width"
        else "one position per gripper joint"
    )
    return [
        f"- gripper: {', '.join(g.joints)} -> {', '.join(g.dim_names)}, {what}; state and "
        "action vectors are the arm joints, then these dimensions"
    ]


def render_card(doc: Mapping[str, Any], card: str | Mapping[str, Any] | None) -> str:
    """The Markdown model card: a summary derived from config.json plus the caller's text."""
    p = doc["policy"]
    w = doc["weights"]
    lines = [
        f"# Policy model: {p['kind']}",
        "",
        f"Created {doc['created']} by diffusion_controller {doc['package_version']}.",
        "",
        "## Interface",
        "",
        f"- joints ({len(p['joint_names'])}): {', '.join(p['joint_names'])}",
        f"- cameras: {', '.join(p['cameras'])} at {p['image_size'][0]}x{p['image_size'][1]} RGB",
        f"- observation frames (To): {p['n_obs_steps']}; chunk length (H): {p['horizon']} actions "
        f"at {p['action_dt']} s; typically executed: {p['n_action_steps']}",
        "- actions: absolute joint position targets (rad), action k for t0 + k * action_dt, "
        "t0 = stamp of the newest observation",
        *_gripper_lines(p.get("gripper")),
        "",
        "## Network",
        "",
        f"- encoder: {p['encoder']['variant']} width {p['encoder']['width']}, "
        f"{p['encoder']['num_keypoints']} spatial-softmax keypoints -> "
        f"{p['encoder']['feature_dim']} features per camera and frame",
    ]
    if p["kind"] == "diffusion":
        d = p["diffusion"]
        lines += [
            f"- U-Net down dims {p['unet']['down_dims']}, kernel {p['unet']['kernel_size']}",
            f"- diffusion: {d['num_train_timesteps']} train steps, {d['beta_schedule']}, "
            f"{d['prediction_type']} prediction, DDIM {d['inference_steps']} steps "
            f"(eta {d['eta']})",
        ]
    else:
        lines.append(f"- regression MLP head {p['mlp_dims']} (baseline, trained with MSE)")
    lines += [
        f"- parameters: {w['num_params']:,}",
        f"- weights: `{w['file']}` sha256 `{w['sha256']}`",
        "",
        "## Action range (demonstrations + margin; sampled chunks are clipped to it)",
        "",
        "| joint | min | max |",
        "| --- | ---: | ---: |",
    ]
    acts = doc["normalizers"]["actions"]
    names = list(p["joint_names"])
    if p.get("gripper"):
        names += GripperConfig.from_dict(p["gripper"]).dim_names
    for name, lo, hi in zip(names, acts["low"], acts["high"], strict=True):
        lines.append(f"| {name} | {lo:.4f} | {hi:.4f} |")
    if card:
        lines += ["", "## Training", ""]
        if isinstance(card, Mapping):
            lines += [f"- {k}: {v}" for k, v in card.items()]
        else:
            lines.append(str(card).strip())
    return "\n".join(lines) + "\n"
