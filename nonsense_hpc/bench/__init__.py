"""Benchmarks behind ``nonsense-hpc bench ...``.

Each compares against named peers in one run, prints ratios, and writes JSON (and a PNG
plot where useful) to benchmarks/results/.
"""
