"""Benchmarks: margin kernels, the enforcement handler and the local pipeline.

Run ``python -m bench [--quick] [--out PATH]``; docs/benchmarks.md explains every figure.
"""
