"""Build script for diffusion_controller: an ament_python package that also pip-installs.

colcon (ament_python) reads setup.cfg to put the console scripts into lib/diffusion_controller,
where `ros2 run` looks for them; pip puts them on the virtualenv's PATH as usual.
"""

import os
from glob import glob

from setuptools import find_packages, setup

PACKAGE = "diffusion_controller"


def tree(src: str) -> list[tuple[str, list[str]]]:
    """data_files entries that mirror every file under `src` into share/<package>/<src>."""
    entries: dict[str, list[str]] = {}
    for path in sorted(glob(os.path.join(src, "**", "*"), recursive=True)):
        if os.path.isfile(path):
            dest = os.path.join("share", PACKAGE, os.path.dirname(path))
            entries.setdefault(dest, []).append(path)
    return sorted(entries.items())


ROS_WHEELS = [
    "ros-rclpy[fastrtps]",
    "ros-sensor-msgs",
    "ros-std-msgs",
    "ros-trajectory-msgs",
    "ros-diagnostic-msgs",
    "ros-visualization-msgs",
    "ros-lifecycle-msgs",
    "ros-std-srvs",
    "ros-rosgraph-msgs",
    "ros-builtin-interfaces",
    "ros-rcl-interfaces",
]
SIM = ["pybullet>=3.2", "rosbags>=0.10", "matplotlib>=3.7"]
TRAIN = ["torch>=2.1", "tqdm>=4.60"]
EXPORT = ["onnx>=1.15", "onnxscript>=0.1"]
# LeRobot v3 datasets (parquet + mp4) and CompressedImage recordings (jpeg/png) as training data.
DATA = ["pyarrow>=14", "av>=12", "pillow>=9"]

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(exclude=["test", "test.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        *tree("launch"),
        *tree("config"),
        *tree("models"),
    ],
    python_requires=">=3.10",
    install_requires=[
        # Floors tested by `make test-floors` (.ci/floors.txt says why each is where it is).
        "numpy>=1.24.2",
        "scipy>=1.9.2",
        "osqp>=1.0.3",
        "pin>=2.6.20",
        "safetensors>=0.4.0",
        "onnxruntime>=1.16.0",
        "pyyaml>=5.4",
    ],
    extras_require={
        "train": TRAIN + EXPORT + DATA,
        "data": DATA,
        "sim": SIM,
        "ros": ROS_WHEELS,
        # Everything the test suite and the demo need on a machine without a ROS install.
        "dev": TRAIN + EXPORT + DATA + SIM + ROS_WHEELS + [
            "pytest>=7",
            "pytest-timeout>=2",
            "hypothesis>=6.80",
            "ruff>=0.5",
            "diffusers>=0.25",
            "colcon-common-extensions>=0.3",
        ],
        # GPU machines; on a Jetson these come from JetPack / NVIDIA's wheels (docs/jetson.md).
        "gpu": ["onnxruntime-gpu>=1.16", "tensorrt>=10"],
    },
    zip_safe=False,
    maintainer="diffusion_controller maintainers",
    maintainer_email="dev@diffusion-controller.invalid",
    description="Diffusion Policy control of a 7-DoF arm with a real-time safety filter, on ROS 2.",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "diffusion-controller = diffusion_controller.cli:main",
            "controller = diffusion_controller.ros.controller_node:main",
            "sim_arm = diffusion_controller.sim.sim_node:main",
        ],
    },
)
