"""Policy configuration: everything needed to rebuild a network and read its inputs and outputs.

Plain dataclasses with no torch import, so a deployment without torch (onnxruntime, TensorRT) can
read a model's config. `from_dict` validates every value and names the offending field, because a
config travels inside model artifacts and a wrong horizon or joint order must never reach the arm.
The checks themselves are in policy/config_checks.py.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from diffusion_controller.data.gripper import GripperConfig
from diffusion_controller.policy.config_checks import (
    as_bool,
    as_choice,
    as_float,
    as_int,
    as_names,
    check_keys,
    fail,
)

KINDS = ("diffusion", "regression")
ENCODER_VARIANTS = ("resnet18", "small")
BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")
PREDICTION_TYPES = ("epsilon", "sample", "v_prediction")


@dataclass
class EncoderConfig:
    """Image encoder: a ResNet-18-style CNN (GroupNorm) with a spatial-softmax keypoint head.

    `group_size` is channels per GroupNorm group (Chi et al. use 16); layers narrower than that use
    one group. "small" is a three-stage, one-block-per-stage variant that runs quickly on a CPU.
    """

    variant: str = "resnet18"
    width: int = 64
    group_size: int = 16
    num_keypoints: int = 32
    feature_dim: int = 64

    def validate(self, where: str = "encoder") -> EncoderConfig:
        self.variant = as_choice(f"{where}.variant", self.variant, ENCODER_VARIANTS)
        self.width = as_int(f"{where}.width", self.width, 1)
        self.group_size = as_int(f"{where}.group_size", self.group_size, 1)
        self.num_keypoints = as_int(f"{where}.num_keypoints", self.num_keypoints, 1)
        self.feature_dim = as_int(f"{where}.feature_dim", self.feature_dim, 1)
        for mult in self.stage_multipliers():
            c = self.width * mult
            if c % self.num_groups(c) != 0:
                fail(
                    f"{where}.group_size",
                    f"{c} channels do not split into groups of {self.group_size}",
                )
        return self

    def stage_multipliers(self) -> tuple[int, ...]:
        return (1, 2, 4, 8) if self.variant == "resnet18" else (1, 2, 4)

    def num_groups(self, channels: int) -> int:
        return max(1, channels // self.group_size)

    def min_image_side(self) -> int:
        """Smallest input side that still leaves a feature map of at least 1x1."""
        return 32 if self.variant == "resnet18" else 8

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], strict: bool = False) -> EncoderConfig:
        check_keys("encoder", data, cls, strict)
        return cls(**dict(data)).validate()


@dataclass
class UNetConfig:
    """Conditional 1-D temporal U-Net (Chi et al. 2023): one level per entry of `down_dims`."""

    down_dims: list[int] = field(default_factory=lambda: [256, 512, 1024])
    kernel_size: int = 5
    n_groups: int = 8
    step_embed_dim: int = 128

    def validate(self, where: str = "unet") -> UNetConfig:
        if isinstance(self.down_dims, (str, bytes)) or not isinstance(self.down_dims, Sequence):
            fail(f"{where}.down_dims", f"expected a list of channel counts, got {self.down_dims!r}")
        if len(self.down_dims) == 0:
            fail(f"{where}.down_dims", "needs at least one level")
        self.down_dims = [as_int(f"{where}.down_dims", d, 1) for d in self.down_dims]
        self.kernel_size = as_int(f"{where}.kernel_size", self.kernel_size, 1)
        if self.kernel_size % 2 == 0:
            fail(
                f"{where}.kernel_size",
                f"must be odd to keep the horizon length, got {self.kernel_size}",
            )
        self.n_groups = as_int(f"{where}.n_groups", self.n_groups, 1)
        for d in self.down_dims:
            if d % self.n_groups:
                fail(
                    f"{where}.down_dims",
                    f"{d} channels are not divisible by n_groups={self.n_groups}",
                )
        self.step_embed_dim = as_int(f"{where}.step_embed_dim", self.step_embed_dim, 4)
        if self.step_embed_dim % 2:
            fail(
                f"{where}.step_embed_dim",
                f"must be even (sin and cos halves), got {self.step_embed_dim}",
            )
        return self

    def to_dict(self) -> dict[str, Any]:
        return {
            f.name: (list(v) if isinstance(v := getattr(self, f.name), list) else v)
            for f in fields(self)
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], strict: bool = False) -> UNetConfig:
        check_keys("unet", data, cls, strict)
        return cls(**dict(data)).validate()


@dataclass
class DiffusionConfig:
    """Noise schedule and DDIM sampling, with the meanings of diffusers' DDIMScheduler options.

    Timestep spacing is "leading" with offset 0, and the final step uses alpha_cumprod = 1
    (set_alpha_to_one), as in Chi et al.'s configuration.
    """

    num_train_timesteps: int = 100
    beta_schedule: str = "squaredcos_cap_v2"
    beta_start: float = 0.0001
    beta_end: float = 0.02
    clip_sample: bool = True
    clip_sample_range: float = 1.0
    prediction_type: str = "epsilon"
    inference_steps: int = 8
    eta: float = 0.0

    def validate(self, where: str = "diffusion") -> DiffusionConfig:
        self.num_train_timesteps = as_int(
            f"{where}.num_train_timesteps", self.num_train_timesteps, 1
        )
        self.beta_schedule = as_choice(f"{where}.beta_schedule", self.beta_schedule, BETA_SCHEDULES)
        self.beta_start = as_float(f"{where}.beta_start", self.beta_start, 0.0, lo_open=True)
        self.beta_end = as_float(f"{where}.beta_end", self.beta_end, 0.0, lo_open=True)
        if self.beta_start > self.beta_end or self.beta_end >= 1.0:
            fail(
                f"{where}.beta_end",
                f"need 0 < beta_start <= beta_end < 1, got {self.beta_start}, {self.beta_end}",
            )
        self.clip_sample = as_bool(f"{where}.clip_sample", self.clip_sample)
        self.clip_sample_range = as_float(
            f"{where}.clip_sample_range", self.clip_sample_range, 0.0, lo_open=True
        )
        self.prediction_type = as_choice(
            f"{where}.prediction_type", self.prediction_type, PREDICTION_TYPES
        )
        self.inference_steps = as_int(
            f"{where}.inference_steps", self.inference_steps, 1, self.num_train_timesteps
        )
        self.eta = as_float(f"{where}.eta", self.eta, 0.0)
        if self.eta > 1.0:
            fail(f"{where}.eta", f"must be in [0, 1] (0: DDIM, 1: DDPM-like), got {self.eta}")
        return self

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], strict: bool = False) -> DiffusionConfig:
        check_keys("diffusion", data, cls, strict)
        return cls(**dict(data)).validate()


@dataclass
class PolicyConfig:
    """What a policy sees and produces, and how its network is built.

    Observations: `n_obs_steps` frames (To) of every camera in `cameras` at `image_size` (H, W),
    plus the state: joint positions in `joint_names` order, then the gripper's dimensions when
    `gripper` is set (data/gripper.py; for the Panda hand one dimension, the finger width in m).
    Output: `horizon` targets of the same layout (absolute joint positions, then gripper dims),
    the k-th for t0 + k * action_dt, where t0 is the newest observation's stamp; shapes: state
    [To, action_dim], chunk [horizon, action_dim], action_dim = len(joint_names) + gripper_dim.
    `n_action_steps` is how many of them a deployment typically executes before the next chunk
    takes over. `mlp_dims` are the hidden widths of the regression baseline's head.
    A config without `gripper` (every model from before grippers) is exactly the arm-only model.
    """

    joint_names: list[str]
    kind: str = "diffusion"
    cameras: list[str] = field(default_factory=lambda: ["camera"])
    image_size: tuple[int, int] = (96, 96)
    n_obs_steps: int = 2
    horizon: int = 16
    action_dt: float = 0.1
    n_action_steps: int = 8
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    unet: UNetConfig = field(default_factory=UNetConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    mlp_dims: list[int] = field(default_factory=lambda: [1024, 1024])
    gripper: GripperConfig | None = None

    def __post_init__(self) -> None:
        self.validate()

    @property
    def arm_dim(self) -> int:
        """The arm's joints: the first `arm_dim` entries of every state and action vector."""
        return len(self.joint_names)

    @property
    def gripper_dim(self) -> int:
        """The gripper's dimensions after the arm's (0 without a gripper)."""
        return 0 if self.gripper is None else self.gripper.dim

    @property
    def action_dim(self) -> int:
        """Entries of one action (and of one state): arm joints, then gripper dims."""
        return self.arm_dim + self.gripper_dim

    @property
    def dim_names(self) -> list[str]:
        """Names of the state/action entries: the joint names, then the gripper's dim names."""
        extra = [] if self.gripper is None else self.gripper.dim_names
        return [*self.joint_names, *extra]

    def validate(self) -> PolicyConfig:
        self.kind = as_choice("kind", self.kind, KINDS)
        self.joint_names = as_names("joint_names", self.joint_names)
        self.cameras = as_names("cameras", self.cameras)
        size = self.image_size
        if isinstance(size, (str, bytes)) or not isinstance(size, Sequence) or len(size) != 2:
            fail("image_size", f"expected [height, width], got {size!r}")
        for sub, default in (
            ("encoder", EncoderConfig),
            ("unet", UNetConfig),
            ("diffusion", DiffusionConfig),
        ):
            value = getattr(self, sub)
            if isinstance(value, Mapping):
                value = default.from_dict(value)
            if not isinstance(value, default):
                fail(sub, f"expected {default.__name__}, got {type(value).__name__}")
            setattr(self, sub, value.validate(sub))
        side = self.encoder.min_image_side()
        self.image_size = (as_int("image_size", size[0], side), as_int("image_size", size[1], side))
        self.n_obs_steps = as_int("n_obs_steps", self.n_obs_steps, 1)
        self.horizon = as_int("horizon", self.horizon, 1)
        self.action_dt = as_float("action_dt", self.action_dt, 0.0, lo_open=True)
        self.n_action_steps = as_int("n_action_steps", self.n_action_steps, 1, self.horizon)
        if isinstance(self.mlp_dims, (str, bytes)) or not isinstance(self.mlp_dims, Sequence):
            fail("mlp_dims", f"expected a list of widths, got {self.mlp_dims!r}")
        self.mlp_dims = [as_int("mlp_dims", d, 1) for d in self.mlp_dims]
        if self.gripper is not None:
            if isinstance(self.gripper, Mapping):
                self.gripper = GripperConfig.from_dict(self.gripper)
            if not isinstance(self.gripper, GripperConfig):
                fail("gripper", f"expected GripperConfig, got {type(self.gripper).__name__}")
            self.gripper.validate("gripper")
            shared = sorted(set(self.gripper.joints) & set(self.joint_names))
            if shared:
                fail("gripper.joints", f"{shared} are also arm joints (joint_names)")
            clash = sorted(set(self.gripper.dim_names) & set(self.joint_names))
            if clash:
                fail("gripper", f"dimension names {clash} clash with joint_names")
        if self.kind == "diffusion":
            factor = 2 ** (len(self.unet.down_dims) - 1)
            if self.horizon % factor:
                fail(
                    "horizon",
                    f"{self.horizon} must be divisible by {factor} "
                    f"(the U-Net halves it {len(self.unet.down_dims) - 1} times)",
                )
        return self

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "joint_names": list(self.joint_names),
            "cameras": list(self.cameras),
            "image_size": [int(self.image_size[0]), int(self.image_size[1])],
            "n_obs_steps": self.n_obs_steps,
            "horizon": self.horizon,
            "action_dt": self.action_dt,
            "n_action_steps": self.n_action_steps,
            "encoder": self.encoder.to_dict(),
            "unet": self.unet.to_dict(),
            "diffusion": self.diffusion.to_dict(),
            "mlp_dims": list(self.mlp_dims),
            # written only when set, so a gripper-less config (and its artifact) stays as before
            **({} if self.gripper is None else {"gripper": self.gripper.to_dict()}),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], strict: bool = False) -> PolicyConfig:
        """Build and validate; `strict` also requires every key (used for artifacts) except
        `gripper`, which configs from before grippers lack."""
        check_keys("policy config", data, cls, strict, optional=("gripper",))
        if "joint_names" not in data:
            fail("policy config", "missing key 'joint_names'")
        kwargs = dict(data)
        kwargs["encoder"] = EncoderConfig.from_dict(data.get("encoder", {}), strict)
        kwargs["unet"] = UNetConfig.from_dict(data.get("unet", {}), strict)
        kwargs["diffusion"] = DiffusionConfig.from_dict(data.get("diffusion", {}), strict)
        if kwargs.get("gripper") is not None:
            kwargs["gripper"] = GripperConfig.from_dict(kwargs["gripper"])
        if "image_size" in kwargs and isinstance(kwargs["image_size"], list):
            kwargs["image_size"] = tuple(kwargs["image_size"])
        return cls(**kwargs)

    @classmethod
    def cpu_default(cls, joint_names: Sequence[str], **overrides: Any) -> PolicyConfig:
        """Small: trains in minutes and samples 8 steps in tens of milliseconds on one CPU core."""
        base: dict[str, Any] = {
            "joint_names": list(joint_names),
            "encoder": EncoderConfig(
                variant="small", width=16, group_size=8, num_keypoints=16, feature_dim=32
            ),
            "unet": UNetConfig(
                down_dims=[32, 64, 128], kernel_size=5, n_groups=8, step_embed_dim=64
            ),
            "mlp_dims": [256, 256],
        }
        base.update(overrides)
        return cls(**base)

    @classmethod
    def paper(cls, joint_names: Sequence[str], **overrides: Any) -> PolicyConfig:
        """CNN-based Diffusion Policy of Chi et al. 2023 (ResNet-18 width, 256/512/1024 U-Net)."""
        base: dict[str, Any] = {
            "joint_names": list(joint_names),
            "encoder": EncoderConfig(
                variant="resnet18", width=64, group_size=16, num_keypoints=32, feature_dim=64
            ),
            "unet": UNetConfig(
                down_dims=[256, 512, 1024], kernel_size=5, n_groups=8, step_embed_dim=128
            ),
            "mlp_dims": [1024, 1024],
        }
        base.update(overrides)
        return cls(**base)
