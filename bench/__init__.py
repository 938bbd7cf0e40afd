"""Benchmarks of scenebench itself (`make bench`)."""
