"""The package installs the ROS way: `colcon build` (ament_python) puts the executables where
`ros2 run` looks and the launch files, configs and shipped models where `ros2 launch` and the node
find them. Built from a copy of the tracked files, so the checkout stays clean."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _tracked_copy(dest: Path) -> Path:
    files = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True
    ).stdout.decode().split("\0")
    pkg = dest / "src" / "diffusion_controller"
    for rel in filter(None, files):
        target = pkg / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, target)
    return pkg


@pytest.mark.slow
def test_colcon_build_installs_executables_launch_config_and_models(tmp_path: Path) -> None:
    colcon = shutil.which("colcon") or str(Path(sys.executable).parent / "colcon")
    if not Path(colcon).exists():
        pytest.skip("colcon is not installed (the dev extra brings colcon-common-extensions)")
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("needs a git checkout to know the tracked files")
    _tracked_copy(tmp_path)
    done = subprocess.run(
        [colcon, "build", "--packages-select", "diffusion_controller"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]

    prefix = tmp_path / "install" / "diffusion_controller"
    for exe in ("controller", "sim_arm", "diffusion-controller"):
        assert (prefix / "lib" / "diffusion_controller" / exe).is_file(), exe
    share = prefix / "share" / "diffusion_controller"
    assert (share / "package.xml").is_file()
    assert (share / "launch" / "arm.launch.py").is_file()
    assert (share / "launch" / "sim.launch.py").is_file()
    assert (share / "config" / "arm.yaml").is_file() and (share / "config" / "sim.yaml").is_file()
    for model in ("panda_reach_diffusion", "panda_reach_regression"):
        assert (share / "models" / model / "model.safetensors").is_file()
        assert (share / "models" / model / "onnx" / "manifest.json").is_file()
    index = prefix / "share" / "ament_index" / "resource_index" / "packages"
    assert (index / "diffusion_controller").is_file()


@pytest.mark.slow
def test_wheel_carries_the_package_data(tmp_path: Path) -> None:
    """`pip install .` (not editable) gets the same launch files, configs and models."""
    import zipfile

    src = _tracked_copy(tmp_path / "ws")
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation",
         "-w", str(tmp_path / "dist")],
        capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("diffusion_controller-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    share = "diffusion_controller-0.1.0.data/data/share/diffusion_controller/"
    for rel in ("package.xml", "launch/sim.launch.py", "config/sim.yaml",
                "models/panda_reach_diffusion/model.safetensors",
                "models/panda_reach_diffusion/onnx/denoiser.onnx"):
        assert share + rel in names, rel
    assert "diffusion_controller/ros/controller_node.py" in names
    assert not any(n.startswith("test/") for n in names)
