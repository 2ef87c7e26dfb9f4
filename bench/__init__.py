"""Benchmarks: each script runs garrison and a peer in the same run and prints one JSON line."""
