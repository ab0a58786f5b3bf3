"""The thin ROS 2 adapter: lifecycle node, parameter table, message conversions, diagnostics."""
