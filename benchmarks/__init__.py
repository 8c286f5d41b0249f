"""Benchmarks: code, not notebooks. Results go to ``benchmarks/results/*.json``."""
