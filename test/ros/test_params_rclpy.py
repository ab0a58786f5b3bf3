"""The table declared on a real rclpy node: types, descriptors, overrides, empty arrays."""

from __future__ import annotations

import pytest

rclpy = pytest.importorskip("rclpy", reason="rclpy is not installed")

from rclpy.parameter import Parameter  # noqa: E402

from diffusion_controller.ros import params  # noqa: E402

pytestmark = pytest.mark.ros


@pytest.fixture
def context():
    ctx = rclpy.context.Context()
    rclpy.init(context=ctx)
    yield ctx
    rclpy.shutdown(context=ctx)


def _node(context, overrides=()):
    from rclpy.node import Node

    return Node("params_probe", context=context, parameter_overrides=list(overrides))


def test_declare_all_defaults(context) -> None:
    node = _node(context)
    try:
        params.declare_all(node)
        values = params.read_all(node)
        assert values == params.defaults()
        assert node.get_parameter_type("obstacles") == Parameter.Type.DOUBLE_ARRAY
        desc = node.describe_parameter("control_rate_hz")
        assert desc.read_only
        assert desc.floating_point_range[0].from_value == 10.0
        assert desc.floating_point_range[0].to_value == 1000.0
        desc = node.describe_parameter("ddim_steps")
        assert not desc.read_only
        assert (desc.integer_range[0].from_value, desc.integer_range[0].to_value) == (1, 100)
        assert "live" in desc.additional_constraints
        assert "cbf" in node.describe_parameter("safety_mode").additional_constraints
    finally:
        node.destroy_node()


def test_overrides_and_descriptor_enforcement(context) -> None:
    overrides = [
        Parameter("obstacles", Parameter.Type.DOUBLE_ARRAY, [0.5, 0.0, 0.3, 0.1]),
        Parameter("ddim_steps", Parameter.Type.INTEGER, 4),
    ]
    node = _node(context, overrides)
    try:
        params.declare_all(node)
        values = params.read_all(node)
        assert values["obstacles"] == [0.5, 0.0, 0.3, 0.1]
        assert values["ddim_steps"] == 4
        # rclpy itself enforces the descriptor: out of range and read-only are refused.
        result = node.set_parameters([Parameter("ddim_steps", Parameter.Type.INTEGER, 500)])[0]
        assert not result.successful
        result = node.set_parameters(
            [Parameter("control_rate_hz", Parameter.Type.DOUBLE, 50.0)])[0]
        assert not result.successful and "read-only" in result.reason
    finally:
        node.destroy_node()
