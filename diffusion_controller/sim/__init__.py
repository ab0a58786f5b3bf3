"""The simulated Panda (PyBullet) with a camera and a hand, two tasks and their demonstrators.

Modules, from the bottom up (only sim_node imports ROS):

- kinematics: pinocchio tool-point FK and IK on the URDF that PyBullet simulates.
- task: TaskSpec (frame, geometry, success rule), sample_task(seed), TaskMonitor; the task's
  frame and geometry are documented in its module docstring.
- world: SimWorld, the physics (position-controlled arm, table, obstacle, target disc), the fixed
  camera, and contacts counted from physics.
- demonstrator: the scripted expert that goes round left or right by a fair coin.
- pick_place: the second task (a cube anywhere in a 24 x 24 cm patch, into the left or the right
  bin), PickPlaceSpec, sample_pick_place(seed), PickPlaceMonitor (success and failure labels);
  pick_demonstrator: its scripted expert (grasp, lift, carry to a fair coin's bin, release).
- tasks: the registry (`--task`, the sim node's `task` parameter): sampler, JSON reader, monitor
  and demonstrator per task.
- rollout: runs a command source against SimWorld at 100 Hz in-process and judges the attempt.
- robot_side: the arm's side of the command path at 1 kHz (forward / joint_trajectory controller
  semantics) and the FR3's commanded-signal limits, with reflexes; ROS-free.
- sim_node: the `sim_arm` executable, SimWorld behind the topics a real arm speaks (node_robot:
  its robot-side wiring).

Recording demonstrations to rosbag2 is `diffusion-controller record` (commands/record.py), reading
them back is data/rosbag_io.read_episode.
"""
