"""Benchmarks for phoenix-channels (see README.md)."""
