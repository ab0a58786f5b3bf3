"""docs/parameters.md and default parameter files, generated from the tables.

    python -m diffusion_controller.settings --markdown > docs/parameters.md
    python -m diffusion_controller.settings --yaml [--node sim_arm]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from diffusion_controller.settings import sim
from diffusion_controller.settings.controller import PARAMS
from diffusion_controller.settings.spec import markdown_tables, yaml_defaults

COMMAND = "python -m diffusion_controller.settings --markdown > docs/parameters.md"


def markdown() -> str:
    """docs/parameters.md: the controller's table, then the simulated arm's."""
    lines = [
        "# Parameters of the controller node",
        "",
        "Generated from `diffusion_controller/settings/controller.py` (the controller) and "
        "`diffusion_controller/settings/sim.py` (the simulated arm) by",
        f"`{COMMAND}`; do not edit by hand.",
        "",
        "*When*: **live** changes apply to the running controller at once; **configure** changes "
        "are stored and take effect on the next configure transition; **read-only** parameters "
        "are fixed at start-up (parameter file or command line); **reset** changes take effect at "
        "the simulated arm's next ~/reset. Values outside the range, or inconsistent with other "
        "parameters or with the loaded model, are rejected with a reason.",
        "Topic defaults are relative names, so the node's namespace moves them "
        "(`namespace:=arm1` reads `/arm1/joint_states`); a name starting with `/` stays put, as "
        "in the shipped config/arm.yaml.",
        "",
    ]
    lines += markdown_tables(PARAMS)
    lines += [
        "# Parameters of the simulated arm (`sim_arm`)",
        "",
        "Topic names are relative, so a namespace moves them.",
        "",
    ]
    lines += markdown_tables(sim.SIM_PARAMS)
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Docs and default parameter files of the "
                                     "package's nodes, from their settings tables.")
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--markdown", action="store_true", help="print docs/parameters.md")
    group.add_argument("--yaml", action="store_true", help="print a parameter file of defaults")
    parser.add_argument("--node", choices=("diffusion_controller", sim.NODE_NAME),
                        default="diffusion_controller", help="whose defaults --yaml prints")
    args = parser.parse_args(argv)
    if args.markdown:
        sys.stdout.write(markdown())
    elif args.node == sim.NODE_NAME:
        sys.stdout.write(yaml_defaults(sim.SIM_PARAMS, section=sim.NODE_NAME))
    else:
        sys.stdout.write(yaml_defaults(PARAMS))
    return 0
