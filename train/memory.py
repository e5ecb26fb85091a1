"""Will a training run fit in memory? Checked before any image is loaded or any file written, so that a
``--size`` or ``--batch-size`` too large for the machine is one ``error:`` line instead of a
``MemoryError`` traceback (or the kernel's OOM killer) minutes later.

The estimate is measured, not guessed: two forward passes of the model at small probe sizes (2 and 4
x its input divisor, batch 1, the run's autocast) count the bytes of the activations autograd keeps for
the backward pass; their growth per pixel times ``H x W x batch`` is what a training step keeps at the
run's size. Added: the weights, their gradients and two optimizer moments (4 x the parameters),
and the images cached in host memory (uint8 image, label and FOV). The run is refused only when this
already exceeds the device's total memory (the host's RAM, or the GPU's), so it never refuses a run that
could fit; a run that passes may still need more (workspace, the allocator's slack).
"""
from __future__ import annotations

import os
import sys
from typing import Optional

import torch
from torch import nn

from cli.errors import UserError, one_line

__all__ = ["activation_bytes_per_pixel", "device_memory", "check_training_memory", "fmt_bytes"]


def fmt_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def _saved_bytes(model: nn.Module, x: torch.Tensor, amp: bool) -> int:
    """Bytes of the tensors autograd saves in ``model(x)`` for the backward pass (parameters excluded,
    each storage once)."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        st = t.untyped_storage()
        if st.data_ptr() not in params:
            saved[st.data_ptr()] = st.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), \
            torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
        model(x)
    return sum(saved.values())


def activation_bytes_per_pixel(model: nn.Module, in_chans: int, divisor: int, amp: bool = False) -> float:
    """Bytes autograd saves for the backward pass per input pixel (batch 1) in training mode, measured on
    the CPU as the growth from ``2 * divisor`` to ``4 * divisor`` square inputs (so that what does not grow
    with the image, such as autocast's copies of the weights, is left out). The model's buffers
    (BatchNorm statistics), its mode and the RNG are left as they were."""
    small = 2 * max(1, int(divisor))
    buffers = {k: b.detach().clone() for k, b in model.named_buffers()}
    was_training = model.training
    try:
        with torch.random.fork_rng(devices=[]):
            model.train()
            grown = [_saved_bytes(model, torch.zeros(1, in_chans, s, s), amp) for s in (small, 2 * small)]
    finally:
        model.train(was_training)
        with torch.no_grad():
            for k, b in model.named_buffers():
                b.copy_(buffers[k])
    return max(0, grown[1] - grown[0]) / (3 * small * small)


def _cgroup_limit() -> Optional[int]:
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = open(path).read().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 1 << 60:
            return int(text)
    return None


def device_memory(device: torch.device) -> Optional[tuple[int, str]]:
    """(total bytes, a description) of ``device``'s memory, or ``None`` where it cannot be told. The CPU's
    is the physical RAM, or the container's limit when that is lower."""
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return int(props.total_memory), f"{device} ({props.name})"
    if device.type != "cpu":
        return None
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None
    limit = _cgroup_limit()
    if limit is not None and limit < ram:
        return limit, "the CPU (this container's memory limit)"
    return int(ram), "the CPU (RAM)"


def check_training_memory(model: nn.Module, cfg: dict, device: torch.device, n_images: int,
                          processes_per_host: int = 1) -> Optional[dict]:
    """Raises :class:`UserError` when a training step at ``cfg["size"]`` and ``cfg["batch_size"]`` (plus
    ``n_images`` cached images) cannot fit in ``device``'s memory (see the module docstring); returns the
    estimate ``{"per_pixel", "activations", "weights", "cache"}`` in bytes, or ``None`` when the probe's
    forward pass fails (then training itself reports the problem)."""
    h, w = cfg["size"]
    batch = int(cfg["batch_size"])
    try:
        per_pixel = activation_bytes_per_pixel(model, cfg["in_chans"], int(getattr(model, "input_divisor", 16)),
                                               bool(cfg.get("amp")))
    except Exception as e:  # noqa: BLE001 - the estimate is advisory; the training step will raise the same
        print(f"note: could not estimate the memory a training step needs ({one_line(str(e))[:200]})",
              file=sys.stderr)
        return None
    est = {"per_pixel": per_pixel, "activations": per_pixel * h * w * batch,
           "weights": 4 * sum(p.numel() * p.element_size() for p in model.parameters()),
           "cache": n_images * h * w * (cfg["in_chans"] + 2)}
    step = est["activations"] + est["weights"]
    host = est["cache"] + (step if device.type == "cpu" else 0)
    checks = [(torch.device("cpu"), host * processes_per_host)]
    if device.type != "cpu":
        checks.append((device, step))
    for dev, need in checks:
        total = device_memory(dev)
        if total is None or need <= total[0]:
            continue
        parts = []
        if dev.type == device.type:
            parts.append(f"{fmt_bytes(est['activations'])} of activations for one training step "
                         f"({fmt_bytes(per_pixel)} per pixel, measured) + {fmt_bytes(est['weights'])} of weights, "
                         "gradients and optimizer state")
        if dev.type == "cpu":
            parts.append(f"{fmt_bytes(est['cache'])} of {n_images} cached images")
        procs = f" x {processes_per_host} processes" if processes_per_host > 1 and dev.type == "cpu" else ""
        raise UserError(f"--size {h} {w} with --batch-size {batch}: training {cfg['model']} needs at least "
                        f"{fmt_bytes(need)} ({' + '.join(parts)}{procs}), more than the {fmt_bytes(total[0])} of "
                        f"{total[1]}; use a smaller --size or --batch-size")
    return est
