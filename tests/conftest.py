"""Fixtures shared by the test files."""
from tests._cuda_backends import cuda_backend, dcn_algo  # noqa: F401  (CUDA tests: GPU or emulation; DCN algorithm)
