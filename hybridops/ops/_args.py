"""Argument normalisation and validation shared by the op wrappers."""
from __future__ import annotations

import operator
from typing import Sequence, Union

import torch

IntPair = Union[int, Sequence[int]]

# Largest stride / padding / dilation / kernel size accepted: the kernels do int64 arithmetic on
# these (H + 2 * padding, dilation * (k - 1), ...), which must not overflow.
MAX_INT_ARG = 2 ** 31 - 1


class InvalidArgumentError(ValueError, RuntimeError):
    """A bad argument to a hybridops op or module (exported as ``hybridops.InvalidArgumentError``).

    Both a ``ValueError`` (Python's convention, what earlier releases raised) and a
    ``RuntimeError`` (what torchvision's ops and every ``TORCH_CHECK`` raise), so code written to
    catch either catches ours. Wrong Python types still raise ``TypeError``.
    """


def _as_int(value: object) -> int:
    """``value`` as an int: ints and int-likes (numpy integers, 0-d integer tensors, SymInts) via
    ``operator.index``; bools and floats raise TypeError (a float is never truncated)."""
    if isinstance(value, bool):
        raise TypeError("bool")
    return operator.index(value)


def _pair_items(value: object, wrong_type: TypeError, name: str, op: str) -> list[int]:
    """The two ints of an iterable ``value``; ``wrong_type`` if it is not one of ints."""
    try:
        out = [_as_int(v) for v in list(value)]  # type: ignore[call-overload]
    except TypeError:
        raise wrong_type from None
    if len(out) != 2:
        raise InvalidArgumentError(f"{op}: {name} must have 2 values, got {len(out)}: {value!r}")
    return out


def pair(value: IntPair, name: str, op: str, minimum: int, maximum: int = MAX_INT_ARG) -> list[int]:
    """``value`` as two ints (an int is used for both), each in ``[minimum, maximum]``.

    Like torchvision, a float (alone or inside the pair) is refused, never truncated.
    """
    wrong_type = TypeError(f"{op}: {name} must be an int or a pair of ints, got {value!r}")
    if isinstance(value, (str, bytes)):
        raise wrong_type
    if isinstance(value, (list, tuple)):
        # Lists and tuples never go through operator.index first: torch 2.11's dynamo cannot trace
        # that builtin raising inside try/except (torch.compile(fullgraph=True) failed there).
        out = _pair_items(value, wrong_type, name, op)
    else:
        try:
            out = [_as_int(value)] * 2
        except TypeError:
            out = _pair_items(value, wrong_type, name, op)
    if min(out) < minimum:
        kind = "positive" if minimum == 1 else "non-negative"
        raise InvalidArgumentError(f"{op}: {name} must be {kind}, got {tuple(out)}")
    if max(out) > maximum:
        raise InvalidArgumentError(f"{op}: {name} must be at most {maximum}, got {tuple(out)}")
    return out


def check_same_device(op: str, input: torch.Tensor, **tensors: object) -> None:
    """Every tensor in ``tensors`` (None skipped) is on ``input``'s device.

    Fake (meta) kernels call it too: a meta tensor among CPU or CUDA tensors sends the whole call
    to the fake kernel (Meta outranks CPU and CUDA in the dispatcher), which would otherwise return
    uninitialised memory.
    """
    for name, t in tensors.items():
        if isinstance(t, torch.Tensor) and t.device != input.device:
            raise InvalidArgumentError(f"{op}: {name} is on {t.device} but input is on {input.device}")


def autocast_active(input: torch.Tensor) -> bool:
    """Whether ``torch.autocast`` is on for ``input``'s device: the op's autocast kernel then casts
    every float argument to the autocast dtype, so their dtypes need not agree on entry."""
    try:
        return torch.is_autocast_enabled(input.device.type)
    except RuntimeError:  # a device type without autocast (meta): nothing casts there
        return False


def check_tensor(t: object, name: str, op: str, ndim: int) -> None:
    """``t`` is a tensor of rank ``ndim`` (devices and dtypes: :func:`check_same_device_and_dtype`,
    after the shapes)."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{op}: {name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dim() != ndim:
        raise InvalidArgumentError(f"{op}: {name} must be {ndim}-D, got {t.dim()}-D with shape {tuple(t.shape)}")


def check_same_device_and_dtype(op: str, input: torch.Tensor, **tensors: object) -> None:
    """Every tensor in ``tensors`` (None skipped) is on ``input``'s device, then has its dtype (any
    float dtype under autocast). Called after the shape checks: like torchvision, a call with a
    wrong shape and a wrong dtype reports the shape."""
    check_same_device(op, input, **tensors)
    present = {name: t for name, t in tensors.items() if t is not None}
    any_float = autocast_active(input) and input.is_floating_point()  # autocast casts every float
    for name, t in present.items():
        if not (t.is_floating_point() if any_float else t.dtype == input.dtype):
            raise InvalidArgumentError(f"{op}: {name} has dtype {t.dtype} but input has dtype {input.dtype}")


def result_memory_format(t: torch.Tensor) -> torch.memory_format:
    """Layout of a result derived from ``t`` (an op's output and grad_input from its input, a gradient
    from its tensor): channels-last when ``t`` is channels-last contiguous and not also NCHW
    contiguous, else contiguous -- the rule of the C++ kernels (``result_format`` in
    ``csrc/common/memory_format.h``), which the fake kernels follow."""
    if t.dim() == 4 and not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format
