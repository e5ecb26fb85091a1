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


def measure(fn: Callable[[], object], device: torch.device, warmup: int = 3, reps: int = 20,
            max_seconds: float = 10.0) -> Timing:
    """Times ``fn()``: ``warmup`` untimed calls, then up to ``reps`` timed calls (stopping early after
    ``max_seconds``). CUDA is timed with events around each call; the CPU with perf_counter."""
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


def environment(device: torch.device) -> dict:
    """Device name, versions, git sha and date for a results file."""
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             cwd=os.path.dirname(RESULTS_DIR), timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        sha = None
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = platform.processor() or platform.machine()
        try:
            with open("/proc/cpuinfo") as f:
                for line in f:
                    if line.startswith("model name"):
                        name = line.split(":", 1)[1].strip()
                        break
        except OSError:
            pass
    import hybridops
    return {
        "device": str(device),
        "device_name": name,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "hybridops": hybridops.build_info(),
        "git_sha": sha,
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
