"""`diffusion-controller bench <what>`: the speed and safety benchmarks.

Each benchmark is a module in diffusion_controller/bench/ with `register(subparsers)`; this
command collects them the same way the top-level CLI collects commands.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil

from diffusion_controller import bench


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("bench", help="run a benchmark (policy, safety, loop)")
    inner = parser.add_subparsers(dest="bench", metavar="BENCH")
    inner.required = True
    for info in sorted(pkgutil.iter_modules(bench.__path__), key=lambda m: m.name):
        if not info.name.startswith("_"):
            importlib.import_module(f"{bench.__name__}.{info.name}").register(inner)
