"""Shared timing harness: correct timing on CPU and CUDA, percentiles, peak memory, JSON results.

Every benchmark measures ours and the peer in the same run, on the same inputs, and reports
medians (p50) with p20/p80 and the ratio peer/ours (> 1 means we are faster).
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import subprocess
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Optional

import torch

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


@dataclass
class Timing:
    """Latency percentiles in milliseconds and peak memory in MiB (CUDA only, else None)."""
    p20_ms: float
    p50_ms: float
    p80_ms: float
    reps: int
    peak_mib: Optional[float] = None


@dataclass
class Row:
    """One benchmark case: ours against the peer."""
    op: str
    case: str
    mode: str
    dtype: str
    ours: Timing
    peer_name: str
    peer: Optional[Timing] = None
    extra: dict = field(default_factory=dict)

    @property
    def speedup(self) -> Optional[float]:
        return None if self.peer is None else self.peer.p50_ms / self.ours.p50_ms


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


_L2_FLUSH: dict = {}


def _flush_l2(device: torch.device) -> None:
    """Writes 256 MiB so the next call starts with its inputs evicted from L2 (50-60 MB on Hopper)."""
    buf = _L2_FLUSH.get(device)
    if buf is None:
        buf = _L2_FLUSH[device] = torch.empty(64 * 1024 * 1024, dtype=torch.float32, device=device)
    buf.zero_()


def measure(fn: Callable[[], object], device: torch.device, warmup: int = 3, reps: int = 20,
            max_seconds: float = 10.0, flush_l2: bool = False) -> Timing:
    """Times ``fn()``: ``warmup`` untimed calls, then up to ``reps`` timed calls (stopping early after
    ``max_seconds`` once 3 are done). CUDA is timed with events around each call (with
    ``flush_l2``, L2 is evicted before each, outside the timed region); the CPU with perf_counter.
    Peak memory (CUDA) is what the timed calls allocated above what was allocated before them."""
    for _ in range(warmup):
        fn()
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    times = []
    start_all = time.perf_counter()
    for _ in range(reps):
        if device.type == "cuda":
            if flush_l2:
                _flush_l2(device)
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
        if time.perf_counter() - start_all > max_seconds and len(times) >= 3:
            break
    peak = None
    if device.type == "cuda":
        peak = (torch.cuda.max_memory_allocated(device) - base) / 2**20
    q = torch.tensor(times, dtype=torch.float64).quantile(torch.tensor([0.2, 0.5, 0.8], dtype=torch.float64))
    return Timing(float(q[0]), float(q[1]), float(q[2]), len(times), peak)


def copy_bandwidth(device: torch.device) -> Optional[float]:
    """Achievable DRAM bandwidth in bytes/s (1 GiB device-to-device copy, median of 10); None on the CPU."""
    if device.type != "cuda":
        return None
    x = torch.empty(256 * 1024 * 1024, dtype=torch.float32, device=device)
    y = torch.empty_like(x)
    t = measure(lambda: y.copy_(x), device, warmup=3, reps=10)
    nbytes = 2 * x.numel() * x.element_size()
    del x, y
    return nbytes / (t.p50_ms * 1e-3)


def git_sha() -> Optional[str]:
    """Short sha of HEAD, with "-dirty" when csrc/ or hybridops/ have uncommitted changes."""
    root = os.path.dirname(os.path.dirname(RESULTS_DIR))
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=root,
                             timeout=10).stdout.strip()
        if not sha:
            return None
        dirty = subprocess.run(["git", "diff", "--quiet", "HEAD", "--", "csrc", "hybridops"], cwd=root,
                               timeout=10).returncode != 0
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU model from /proc/cpuinfo."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return name


def environment(device: torch.device) -> dict:
    """Device name, versions, git sha and date for a results file."""
    import hybridops
    return {
        "device": str(device),
        "device_name": device_name(device),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "hybridops": hybridops.build_info(),
        "git_sha": git_sha(),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
    }


def print_table(rows: list[Row]) -> None:
    header = f"{'op':<16} {'case':<28} {'mode':<9} {'dtype':<9} {'ours p50 ms':>12} {'peer p50 ms':>12} {'speedup':>8}  peer"
    print(header)
    print("-" * len(header))
    for r in rows:
        peer = f"{r.peer.p50_ms:12.3f}" if r.peer else f"{'-':>12}"
        speed = f"{r.speedup:7.2f}x" if r.speedup else f"{'-':>8}"
        print(f"{r.op:<16} {r.case:<28} {r.mode:<9} {r.dtype:<9} {r.ours.p50_ms:12.3f} {peer} {speed}  {r.peer_name}")


def write_json(rows: list[Row], device: torch.device, name: str, path: Optional[str] = None) -> str:
    """Writes ``{"environment": ..., "rows": [...]}`` to ``path`` (default ``results/<name>-<device>-<date>.json``)."""
    env = environment(device)
    if path is None:
        os.makedirs(RESULTS_DIR, exist_ok=True)
        tag = "cuda-" + env["device_name"].replace(" ", "_") if device.type == "cuda" else "cpu"
        stamp = env["date"][:19].replace(":", "").replace("-", "")
        path = os.path.join(RESULTS_DIR, f"{name}-{tag}-{stamp}.json")
    payload = {"benchmark": name, "environment": env,
               "rows": [dict(asdict(r), speedup=r.speedup) for r in rows]}
    with open(path, "w") as f:
        json.dump(payload, f, indent=1)
    return path
