"""The settings tables on a ROS node: declarations, descriptors, reading values back.

The tables themselves (every setting's name, type, default, range, unit, description and when it
applies) live in the ROS-free diffusion_controller/settings/ package, which the core reads too;
this module adds only the rclpy side: `declare_all(node, table)` declares a table with its
descriptors, `read_all(node, table)` reads it back as plain Python values. The controller table's
names (PARAMS, SPECS, defaults, validate, check_update, ...) are re-exported here for the node.
rclpy is imported lazily, so importing this module needs no ROS.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from diffusion_controller.settings.checks import (  # noqa: F401 (re-exported for the node)
    ModelFacts,
    check_against_model,
    check_update,
    check_value,
    load_param_file,
    obstacle_tuples,
    validate,
)
from diffusion_controller.settings.controller import (  # noqa: F401 (re-exported for the node)
    PARAMS,
    SPECS,
    defaults,
)
from diffusion_controller.settings.spec import (  # noqa: F401 (re-exported for the node)
    BOOL,
    DOUBLE,
    DOUBLE_ARRAY,
    INT,
    LIVE,
    ON_CONFIGURE,
    READ_ONLY,
    STRING,
    STRING_ARRAY,
    ParamSpec,
    copy_value,
)

# --- rclpy glue (imported lazily so this module stays importable without ROS) -------------------


def descriptor(spec: ParamSpec) -> Any:
    """The rcl_interfaces ParameterDescriptor for `spec` (type, description, range, read-only)."""
    from rcl_interfaces.msg import (
        FloatingPointRange,
        IntegerRange,
        ParameterDescriptor,
    )

    desc = ParameterDescriptor(
        name=spec.name,
        type=_ros_type(spec.kind).value,
        description=spec.description + (f" [{spec.unit}]" if spec.unit else ""),
        read_only=spec.read_only,
    )
    extra = [f"takes effect: {spec.when}"]
    if spec.choices:
        extra.insert(0, "one of: " + ", ".join(spec.choices))
    desc.additional_constraints = "; ".join(extra)
    if spec.kind == DOUBLE and (spec.min is not None or spec.max is not None):
        desc.floating_point_range = [
            FloatingPointRange(
                from_value=float(spec.min if spec.min is not None else -sys.float_info.max),
                to_value=float(spec.max if spec.max is not None else sys.float_info.max),
                step=0.0,
            )
        ]
    if spec.kind == INT and (spec.min is not None or spec.max is not None):
        desc.integer_range = [
            IntegerRange(
                from_value=int(spec.min if spec.min is not None else -(2**63)),
                to_value=int(spec.max if spec.max is not None else 2**63 - 1),
                step=1,
            )
        ]
    return desc


def _ros_type(kind: str) -> Any:
    from rclpy.parameter import Parameter

    return {
        BOOL: Parameter.Type.BOOL,
        INT: Parameter.Type.INTEGER,
        DOUBLE: Parameter.Type.DOUBLE,
        STRING: Parameter.Type.STRING,
        DOUBLE_ARRAY: Parameter.Type.DOUBLE_ARRAY,
        STRING_ARRAY: Parameter.Type.STRING_ARRAY,
    }[kind]


def declare_all(node: Any, table: Sequence[ParamSpec] = PARAMS) -> None:
    """Declare every parameter of `table` on `node` with its descriptor (works on Humble's rclpy).

    Empty array defaults cannot be declared by value (rclpy would infer a byte array), so those are
    declared by type and then set to an empty array of the right type unless overridden.
    """
    from rclpy.parameter import Parameter

    for spec in table:
        desc = descriptor(spec)
        if isinstance(spec.default, list) and not spec.default:
            node.declare_parameter(spec.name, _ros_type(spec.kind), desc)
            if node.get_parameter_type(spec.name) == Parameter.Type.NOT_SET or _unset(node, spec):
                node.set_parameters([Parameter(spec.name, _ros_type(spec.kind), [])])
        else:
            default = spec.default
            if spec.kind == DOUBLE:
                default = float(default)
            node.declare_parameter(spec.name, copy_value(default), desc)


def _unset(node: Any, spec: ParamSpec) -> bool:
    try:
        node.get_parameter(spec.name)
    except Exception:  # ParameterUninitializedException (not exported the same way on every distro)
        return True
    return False


def read_all(node: Any, table: Sequence[ParamSpec] = PARAMS) -> dict[str, Any]:
    """Current values of every parameter of `table` as plain Python values."""
    return {spec.name: to_python(spec, node.get_parameter(spec.name).value) for spec in table}


def to_python(spec: ParamSpec, value: Any) -> Any:
    """Normalise a value from rclpy (arrays may arrive as array.array) to plain Python."""
    if spec.kind in (DOUBLE_ARRAY, STRING_ARRAY):
        return [] if value is None else list(value)
    if spec.kind == DOUBLE and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value
