"""Every setting of the package's nodes, declared once and ROS-free.

- spec.py: what a setting is (ParamSpec) and what a table of them can do (check, build a core
  config, read a parameter file, render docs);
- controller.py: the controller node's table; checks.py: its checks across settings and against
  the model; geometry.py and panda.py: the collision-geometry strings and the Panda defaults;
- sim.py: the simulated arm's table.

`python -m diffusion_controller.settings --markdown > docs/parameters.md` writes the docs.
"""
