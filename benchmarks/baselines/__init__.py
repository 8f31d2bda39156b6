"""Baseline servers the benchmark harness compares against."""
