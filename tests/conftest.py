"""Fixtures shared by the test files."""
from tests._cuda_backends import cuda_backend  # noqa: F401  (the CUDA tests' backend: GPU or emulation)
