"""Reliability tooling: the node under load, faults and long runs (benchmarks, soak)."""
