"""The 100 Hz side: chunks, interpolation, robot model, OSQP safety filter, watchdogs, the loop.

Plain Python over numpy, scipy, osqp and pinocchio; no ROS import.
"""
