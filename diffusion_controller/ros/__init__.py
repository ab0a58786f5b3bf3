"""The thin ROS 2 adapter: the lifecycle node wiring runtime.controller to topics, services,
parameters (the parameter table) and diagnostics; message conversions."""
