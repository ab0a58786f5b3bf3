"""diffusion_controller: a Diffusion Policy driving a 7-DoF arm safely and in real time.

Layers (docs/architecture.md): policy/, runtime/ and control/ are plain Python with no ROS import;
ros/ is a thin adapter; sim/ and eval/ build the path from demonstrations to a measured policy.
"""

__version__ = "0.1.0"
