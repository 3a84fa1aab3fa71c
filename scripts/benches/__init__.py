"""Benchmark scripts; each writes JSON + markdown under benchmarks/."""
