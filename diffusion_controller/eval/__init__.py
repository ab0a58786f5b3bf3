"""Closed-loop evaluation through the real node and the simulator: seed panels, metrics, plots."""
