"""Autograd helpers shared by the op wrappers."""
from __future__ import annotations

import torch


def forbid_double_backward(op: str, namespace: str = "hybridops") -> None:
    """Registers autograd for ``<namespace>::<op>_backward`` that raises a clear error: the backward
    kernels have no derivatives of their own. Points users to the differentiable reference."""

    def backward_of_backward(ctx, *grads):
        raise RuntimeError(
            f"hybridops.{op} does not support double backward (gradients of its gradients, e.g. "
            "torch.autograd.grad(..., create_graph=True) followed by another backward). Use "
            f"hybridops.reference.{op}, which is plain PyTorch, where you need it.")

    torch.library.register_autograd(f"{namespace}::{op}_backward", backward_of_backward,
                                    setup_context=lambda ctx, inputs, output: None)
