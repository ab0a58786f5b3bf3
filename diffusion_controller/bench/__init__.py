"""Benchmarks behind `diffusion-controller bench`: each module registers one subcommand.

Speed goals live here and in docs/benchmarks.md, never as timing asserts in tests.
"""
