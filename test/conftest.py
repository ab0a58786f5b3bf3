"""Session-wide test settings.

Each pytest session gets a DDS domain of its own so that parallel test runs on one machine (and
the developer's own nodes) never see each other's topics.

Fixtures many test files share live here (ROS ones in test/ros/conftest.py): `robot`, the
Panda model from the URDF that ships with pybullet_data, one per test module (as each file built
it before), and `tiny_artifact`, which writes the small random policy the worker and the ROS
tests run.

The package's core runs without torch (a Jetson deployment on onnxruntime or TensorRT has none),
and CI checks that on Python 3.10 in an environment without torch and onnx. There, the test
modules that import them at the top are reported as skipped with the reason, not as errors.
"""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path

import pytest

os.environ.setdefault("ROS_DOMAIN_ID", str(1 + os.getpid() % 100))
os.environ.setdefault("OMP_NUM_THREADS", "1")

_OPTIONAL = ("torch", "onnx", "diffusers")
_MISSING = [m for m in _OPTIONAL if importlib.util.find_spec(m) is None]
_TOP_IMPORT = re.compile(r"^(?:import|from) (" + "|".join(_MISSING or ["$^"]) + r")\b", re.M)


class _SkippedModule(pytest.Module):
    """Stands in for a test module whose top-level imports are not installed."""

    reason = ""

    def collect(self):  # type: ignore[override]
        pytest.skip(self.reason, allow_module_level=True)


def pytest_pycollect_makemodule(module_path: Path, parent: pytest.Collector):
    if not _MISSING:
        return None
    found = sorted(set(_TOP_IMPORT.findall(module_path.read_text(encoding="utf-8"))))
    if not found:
        return None
    module = _SkippedModule.from_parent(parent, path=module_path)
    module.reason = f"needs {', '.join(found)}, not installed here (torch-free core check)"
    return module


@pytest.fixture(scope="module")
def robot():
    """The Panda (7 arm joints, its hand locked) as a RobotModel: one per test module."""
    pytest.importorskip("pybullet_data", reason="pybullet_data ships the Panda URDF")
    from diffusion_controller.control.panda import panda_urdf_path
    from diffusion_controller.control.robot_model import RobotModel

    return RobotModel.from_urdf(panda_urdf_path())


@pytest.fixture(scope="session")
def tiny_artifact():
    """Writes a randomly initialised small policy artifact (7 Panda joints, 32x32 images, horizon
    16, seeded), its normalisers spanning `home` +- `spread`: `write(out, home, spread, card)`."""
    torch = pytest.importorskip("torch", reason="torch is needed to create the test model")
    from diffusion_controller.policy.artifact import save_artifact
    from diffusion_controller.policy.config import EncoderConfig, PolicyConfig, UNetConfig
    from diffusion_controller.policy.model import build_net
    from diffusion_controller.policy.normalize import Normalizer

    def write(out: Path, home, spread: float, card: str) -> Path:
        cfg = PolicyConfig.cpu_default(
            [f"panda_joint{i}" for i in range(1, 8)], image_size=(32, 32), horizon=16,
            action_dt=0.1,
            encoder=EncoderConfig(variant="small", width=8, group_size=8, num_keypoints=8,
                                  feature_dim=16),
            unet=UNetConfig(down_dims=[32, 64], kernel_size=3, n_groups=8, step_embed_dim=32),
        )
        torch.manual_seed(0)
        norms = {k: Normalizer(home - spread, home + spread) for k in ("joints", "actions")}
        save_artifact(out, build_net(cfg), cfg, norms, card=card)
        return out

    return write
