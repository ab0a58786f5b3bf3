"""Launch files: statically checked everywhere, loaded with launch_ros where it is installed."""

from __future__ import annotations

import ast
import importlib.util
import re
from pathlib import Path

import pytest
import yaml

from diffusion_controller.ros import params

pytestmark = pytest.mark.ros

ROOT = Path(__file__).resolve().parents[2]
LAUNCH = {"arm": ROOT / "launch" / "arm.launch.py", "sim": ROOT / "launch" / "sim.launch.py"}
HAVE_LAUNCH_ROS = importlib.util.find_spec("launch_ros") is not None


def _console_scripts() -> set[str]:
    text = (ROOT / "setup.py").read_text(encoding="utf-8")
    return set(re.findall(r'"([A-Za-z0-9_-]+)\s*=\s*diffusion_controller\.', text))


def _calls(tree: ast.AST, name: str) -> list[ast.Call]:
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            fn = node.func
            fname = fn.id if isinstance(fn, ast.Name) else getattr(fn, "attr", "")
            if fname == name:
                out.append(node)
    return out


def _kw(call: ast.Call, key: str) -> ast.AST | None:
    return next((k.value for k in call.keywords if k.arg == key), None)


@pytest.mark.parametrize("which", ["arm", "sim"])
def test_launch_file_parses_and_references_exist(which: str) -> None:
    tree = ast.parse(LAUNCH[which].read_text(encoding="utf-8"), filename=str(LAUNCH[which]))
    funcs = [n.name for n in tree.body if isinstance(n, ast.FunctionDef)]
    assert "generate_launch_description" in funcs
    scripts = _console_scripts()
    nodes = _calls(tree, "LifecycleNode") + _calls(tree, "Node")
    executables = set()
    for call in nodes:
        assert isinstance(_kw(call, "package"), ast.Constant)
        assert _kw(call, "package").value == "diffusion_controller"
        exe = _kw(call, "executable")
        assert isinstance(exe, ast.Constant)
        executables.add(exe.value)
        assert exe.value in scripts, f"{exe.value} is not a console script in setup.py"
    assert "controller" in executables
    if which == "sim":
        assert "sim_arm" in executables
    # Config files referenced exist and hold only known controller parameters.
    yamls = {n.value for n in ast.walk(tree)
             if isinstance(n, ast.Constant) and isinstance(n.value, str)
             and n.value.endswith(".yaml")}
    assert yamls == {f"{which}.yaml"}
    for name in yamls:
        data = yaml.safe_load((ROOT / "config" / name).read_text(encoding="utf-8"))
        assert set(data["/**"]["ros__parameters"]) <= set(params.SPECS)
    # Parameters set from launch arguments exist in the table.
    controller = next(c for c in nodes if _kw(c, "executable").value == "controller")
    plist = _kw(controller, "parameters")
    assert isinstance(plist, ast.List)
    dicts = [d for d in plist.elts if isinstance(d, ast.Dict)]
    keys = {k.value for d in dicts for k in d.keys if isinstance(k, ast.Constant)}
    assert "model_path" in keys and keys <= set(params.SPECS)
    declared = {_kw(c, "name").value if _kw(c, "name") is not None else c.args[0].value
                for c in _calls(tree, "DeclareLaunchArgument")}
    assert {"model", "backend", "params_file", "namespace"} <= declared
    if which == "arm":
        assert "command_interface" in declared


@pytest.mark.skipif(not HAVE_LAUNCH_ROS, reason="launch_ros is not installed (pip has no wheel)")
@pytest.mark.parametrize("which", ["arm", "sim"])
def test_launch_description_loads(which: str) -> None:
    from launch.actions import DeclareLaunchArgument
    from launch.launch_description_sources import get_launch_description_from_python_launch_file
    from launch_ros.actions import LifecycleNode

    desc = get_launch_description_from_python_launch_file(str(LAUNCH[which]))
    names = {a.name for a in desc.entities if isinstance(a, DeclareLaunchArgument)}
    assert {"model", "backend", "params_file", "namespace"} <= names
    assert any(isinstance(a, LifecycleNode) for a in desc.entities)
