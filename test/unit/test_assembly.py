"""The core built from settings (control/assembly.py): the node's path, which `bench safety`
measures. Collision geometry as parameters, a clear error for a URDF the defaults do not fit."""

from __future__ import annotations

import json

import numpy as np
import pytest

from diffusion_controller.control import assembly, panda
from diffusion_controller.ros import params

TWO_LINK = """<robot name="two">
  <link name="base"/><link name="l1"/><link name="l2"/>
  <joint name="j1" type="revolute"><parent link="base"/><child link="l1"/>
    <origin xyz="0 0 0.3"/><axis xyz="0 0 1"/>
    <limit lower="-2" upper="2" velocity="1" effort="10" acceleration="5" jerk="500"/></joint>
  <joint name="j2" type="revolute"><parent link="l1"/><child link="l2"/>
    <origin xyz="0 0 0.3"/><axis xyz="0 1 0"/>
    <limit lower="-2" upper="2" velocity="1" effort="10" acceleration="5" jerk="500"/></joint>
</robot>"""


def test_sphere_and_pair_strings_round_trip() -> None:
    assert assembly.parse_spheres(assembly.format_spheres(panda.PANDA_SPHERES)) == {
        k: [tuple(s) for s in v] for k, v in panda.PANDA_SPHERES.items()}
    assert assembly.parse_pairs(["a:b", " c : d "]) == [("a", "b"), ("c", "d")]
    for bad in (["link0 0 0 0 0.1"], ["l: 0 0 0"], ["l: 0 0 0 -1"], ["l: 0 nan 0 1"]):
        with pytest.raises(ValueError, match="collision_spheres entry"):
            assembly.parse_spheres(bad)
    with pytest.raises(ValueError, match="self_collision_pairs entry"):
        assembly.parse_pairs(["a-b"])


def test_the_deployed_filter_has_the_self_collision_rows() -> None:
    values = params.defaults()
    _, filt = assembly.safety_filter_from_settings(panda.panda_urdf_path(), values)
    counts = filt.barrier_row_counts
    assert counts["self_collision_rows"] > 0
    assert counts["workspace_rows"] > 0 and counts["obstacle_rows"] == 0
    # no pairs: no rows, and the table check passes
    values["self_collision_pairs"] = []
    assert not params.validate(values)
    _, bare = assembly.safety_filter_from_settings(panda.panda_urdf_path(), values)
    assert bare.barrier_row_counts["self_collision_rows"] == 0


def test_a_urdf_without_the_sphere_links_names_what_to_set() -> None:
    values = params.defaults()
    values["joint_names"] = ["j1", "j2"]
    values["ee_frame"] = ""
    with pytest.raises(ValueError, match="set collision_spheres"):
        assembly.safety_filter_from_settings(TWO_LINK, values)
    values["collision_spheres"] = ["l1: 0 0 0.1 0.05", "l2: 0 0 0.1 0.05"]
    values["self_collision_pairs"] = ["l2:base"]
    with pytest.raises(ValueError, match="carry no collision sphere"):
        assembly.safety_filter_from_settings(TWO_LINK, values)
    values["self_collision_pairs"] = []
    with pytest.raises(ValueError, match="set tool_links"):  # the Panda's fingers by default
        assembly.safety_filter_from_settings(TWO_LINK, values)
    values["tool_links"] = ["l2"]
    robot, filt = assembly.safety_filter_from_settings(TWO_LINK, values)
    assert filt.barrier_row_counts["tool_rows"] == 6 + len(values["obstacles"]) // 4
    values["tool_links"] = []
    assert robot.joint_names == ["j1", "j2"]
    filt.reset(np.zeros(2))
    assert filt.barrier_row_counts["self_collision_rows"] == 0


def test_pairs_without_spheres_are_refused_by_the_table() -> None:
    values = params.defaults()
    values["self_collision_pairs"] = ["panda_link7:nowhere"]
    assert any("without collision_spheres" in e for e in params.validate(values))


def test_bench_safety_measures_the_filter_the_parameter_file_deploys(tmp_path) -> None:
    from diffusion_controller.bench import safety

    row = safety.bench_mode("cbf", 200, seed=0, params_file=safety.default_params_file())
    assert row["violations"] == 0
    assert row["self_collision_rows"] > 0 and row["obstacle_rows"] > 0
    custom = tmp_path / "no_self.yaml"
    custom.write_text("/**:\n  ros__parameters:\n    self_collision_pairs: ['']\n")
    with pytest.raises(ValueError, match="self_collision_pairs entry"):
        safety.bench_mode("cbf", 10, seed=0, params_file=str(custom))
    custom.write_text("/**:\n  ros__parameters:\n    velocity_scal: 0.3\n")
    with pytest.raises(ValueError, match="unknown parameter 'velocity_scal'"):
        safety.bench_mode("cbf", 10, seed=0, params_file=str(custom))
    json.dumps(row)  # the JSON rows carry the counts by kind
