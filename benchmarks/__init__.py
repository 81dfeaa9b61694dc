"""Benchmarks: run against a local fault server, results written to benchmarks/results/."""
