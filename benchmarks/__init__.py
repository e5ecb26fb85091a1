"""Benchmarks of hybridops (run from the repo root: ``python -m benchmarks.<name>``)."""
