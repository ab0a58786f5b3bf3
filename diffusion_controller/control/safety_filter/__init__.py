"""The MPC/CBF safety filter, as a package of named stages (see filter.py for the design).

Everything importers used from the former single module is re-exported here."""

from diffusion_controller.control.safety_filter.config import LIVE_FIELDS, SafetyConfig
from diffusion_controller.control.safety_filter.filter import SafetyFilter
from diffusion_controller.control.safety_filter.problem import mpc_blocks

__all__ = ["LIVE_FIELDS", "SafetyConfig", "SafetyFilter", "mpc_blocks"]
