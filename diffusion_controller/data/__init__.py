"""Demonstration data: rosbag2 (mcap, sqlite3) and LeRobot v3 reading, data specs, alignment into
episodes, rosbag2 writing for the simulator, and the `data inspect` report."""
