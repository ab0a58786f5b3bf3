"""Demonstration data on disk: rosbag2 (mcap) recording and reading, aligned into episodes."""
