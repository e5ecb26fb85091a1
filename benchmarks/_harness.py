"""Shared timing harness of the op benchmarks: correct timing on CPU and CUDA, p20/p50/p80, peak
memory, JSON results.

Every benchmark measures ours and its peers in the same run, on the same inputs, interleaved round by
round (``measure_interleaved``), in the three ``MODES`` (``op_step``):

* ``forward``  -- the op under ``torch.no_grad()``;
* ``backward`` -- the backward pass alone (the forward runs untimed before each timed call);
* ``full``     -- forward and backward together.

Each ``Row`` holds ours and one peer (p50 with p20/p80 in ms, peak MiB on CUDA); ``speedup`` is
peer p50 / ours p50 (> 1 means we are faster), ``summarize`` gives its geomean/min/max per group.
``write_json`` writes rows plus device, versions, git sha and date under ``benchmarks/results/``.
``TimeLimit`` is every benchmark's ``--time-limit``: no new measurement after that many seconds, and
SIGTERM (``timeout``'s) or Ctrl-C ends the run early; either way the results measured so far are
written, with a ``time_limit`` record of what was skipped (``benchmarks/gpu_verify.sh`` relies on it).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import signal
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterator, Optional, Sequence, Union

import torch
from torch import Tensor

from cli.provenance import git_sha, utc_timestamp

MODES = ("forward", "backward", "full")  # see op_step
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
    """One benchmark case in one mode: ours against one peer. A case with several peers gives one
    Row per peer, all sharing the same ``ours`` Timing (measured in the same interleaved run)."""
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
        """peer p50 / ours p50 (> 1 means ours is faster); None without a peer timing."""
        return None if self.peer is None else self.peer.p50_ms / self.ours.p50_ms


class TimeLimit:
    """A benchmark's time budget (``--time-limit SECONDS``; None: no limit).

    Each measurement asks ``allow()`` before it starts: the first one always runs (a results file
    is never empty), later ones only while ``seconds`` have not passed since the limit was made; a
    refused one, and any ``skip(n)`` the benchmark reports for work it leaves out whole (a case whose
    set-up it does not start), is counted. A measurement that started runs to its end, so a run can
    overshoot the limit by one measurement. ``guard()`` ends its block quietly on SIGTERM or Ctrl-C
    instead, keeping what was measured. ``record()`` is the ``time_limit`` entry of the results file:
    ``{"time_limit_s", "complete", "measured", "skipped", "interrupted"}``."""

    def __init__(self, seconds: Optional[float] = None):
        if seconds is not None and not seconds > 0:
            raise ValueError(f"time limit must be > 0 seconds, got {seconds}")
        self.seconds = seconds
        self.measured = 0
        self.skipped = 0
        self.interrupted = False
        self._start = time.perf_counter()

    @property
    def expired(self) -> bool:
        """Whether the next measurement would be refused."""
        return (self.seconds is not None and self.measured > 0
                and time.perf_counter() - self._start >= self.seconds)

    def allow(self) -> bool:
        """True (and counted as measured) if the next measurement may start, else counted as skipped."""
        if self.expired:
            self.skip(1)
            return False
        self.measured += 1
        return True

    def skip(self, n: int) -> None:
        """Counts ``n`` measurements left out; the first skip prints one line saying so."""
        if self.skipped == 0 and n > 0:
            print(f"# time limit of {self.seconds} s reached: the remaining measurements are skipped", flush=True)
        self.skipped += n

    @contextlib.contextmanager
    def guard(self) -> Iterator["TimeLimit"]:
        """Runs the block with SIGTERM raising KeyboardInterrupt; a KeyboardInterrupt (SIGTERM or
        Ctrl-C) ends the block, marks the run ``interrupted`` and is not re-raised, so the caller
        still writes what was measured. The previous SIGTERM handler is restored afterwards."""
        def on_sigterm(signum, frame):
            raise KeyboardInterrupt(f"signal {signum}")
        previous = signal.signal(signal.SIGTERM, on_sigterm)
        try:
            yield self
        except KeyboardInterrupt as exc:
            self.interrupted = True
            print(f"\n# interrupted ({exc or 'Ctrl-C'}): writing what was measured so far", flush=True)
        finally:
            signal.signal(signal.SIGTERM, previous)

    def record(self) -> dict:
        return {"time_limit_s": self.seconds, "complete": self.skipped == 0 and not self.interrupted,
                "measured": self.measured, "skipped": self.skipped, "interrupted": self.interrupted}


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a number > 0 (seconds), got {text!r}")
    return value


def add_time_limit_argument(parser: argparse.ArgumentParser) -> None:
    """``--time-limit SECONDS`` (see ``TimeLimit``); ``TimeLimit(args.time_limit)`` reads it."""
    parser.add_argument("--time-limit", type=_positive_seconds, default=None, metavar="SECONDS",
                        help="start no new measurement after SECONDS (the first always runs); SIGTERM or Ctrl-C "
                             "also stops early; the results so far are written, with a time_limit record of what "
                             "was skipped (default: no limit)")


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


@dataclass
class Step:
    """One thing to time: ``run(prepare())``, where only ``run`` is timed.

    ``prepare`` (optional) is called, untimed, before every timed (and warm-up) call of ``run``; its
    return value is ``run``'s argument (``None`` without ``prepare``). ``op_step`` builds the
    forward/backward/full steps of an op; a plain ``fn()`` is ``Step(lambda _: fn())``."""
    run: Callable[[object], object]
    prepare: Optional[Callable[[], object]] = None


def _as_step(step: Union[Step, Callable[[], object]]) -> Step:
    if isinstance(step, Step):
        return step
    return Step(run=lambda _arg, fn=step: fn())


def _time_once(step: Step, device: torch.device, flush_l2: bool) -> tuple[float, Optional[float]]:
    """One timed call of ``step``: (milliseconds, peak MiB above what was allocated before it or
    None on the CPU). ``prepare``, the L2 flush and freeing the result stay outside the timed region."""
    arg = step.prepare() if step.prepare is not None else None
    if device.type != "cuda":
        t0 = time.perf_counter()
        out = step.run(arg)
        ms = (time.perf_counter() - t0) * 1e3
        del out, arg
        return ms, None
    if flush_l2:
        _flush_l2(device)
    torch.cuda.synchronize(device)
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    out = step.run(arg)
    end.record()
    end.synchronize()
    peak = (torch.cuda.max_memory_allocated(device) - base) / 2**20
    del out, arg
    return start.elapsed_time(end), peak


def _timing(times: list[float], peaks: list[Optional[float]]) -> Timing:
    q = torch.tensor(times, dtype=torch.float64).quantile(torch.tensor([0.2, 0.5, 0.8], dtype=torch.float64))
    peak = max(peaks) if peaks and peaks[0] is not None else None
    return Timing(float(q[0]), float(q[1]), float(q[2]), len(times), peak)


def measure_interleaved(steps: dict[str, Union[Step, Callable[[], object]]], device: torch.device,
                        warmup: int = 3, reps: int = 20, max_seconds: float = 10.0,
                        flush_l2: bool = False) -> dict[str, Timing]:
    """Times several steps (e.g. ours and its peers) round-robin, one call of each per round, so that
    load from other processes on a shared machine hits them alike.

    Each step (a ``Step`` or a plain ``fn()``) first gets ``max(1, warmup)`` untimed calls (the first
    builds lazy state such as ``op_step``'s gradient, allocator pools, cuDNN/oneDNN plans). Then up
    to ``reps`` rounds, stopping early once ``max_seconds`` have passed and 3 rounds are done; the
    order within a round rotates by one step per round so that no step always follows the same one.
    CUDA is timed with events around each call (with ``flush_l2``, L2 is evicted before each,
    outside the timed region), the CPU with perf_counter. Peak memory (CUDA, MiB): per timed call the
    peak allocated above what was allocated just before it (after ``prepare``), max over the calls.

    Returns ``{name: Timing}`` in the order of ``steps``, all with the same number of repetitions.
    """
    device = torch.device(device)
    plan = {name: _as_step(s) for name, s in steps.items()}
    for step in plan.values():
        for _ in range(max(1, warmup)):
            arg = step.prepare() if step.prepare is not None else None
            step.run(arg)
            del arg
    _sync(device)
    names = list(plan)
    times: dict[str, list[float]] = {n: [] for n in names}
    peaks: dict[str, list[Optional[float]]] = {n: [] for n in names}
    start_all = time.perf_counter()
    for rnd in range(reps):
        for i in range(len(names)):
            name = names[(rnd + i) % len(names)]
            ms, peak = _time_once(plan[name], device, flush_l2)
            times[name].append(ms)
            peaks[name].append(peak)
        if time.perf_counter() - start_all > max_seconds and rnd + 1 >= 3:
            break
    return {n: _timing(times[n], peaks[n]) for n in names}


def measure(fn: Callable[[], object], device: torch.device, warmup: int = 3, reps: int = 20,
            max_seconds: float = 10.0, flush_l2: bool = False) -> Timing:
    """Times ``fn()`` alone: ``measure_interleaved`` with one step (see there)."""
    return measure_interleaved({"fn": fn}, device, warmup, reps, max_seconds, flush_l2)["fn"]


def _zero_grads(leaves: Sequence[Tensor]) -> None:
    for t in leaves:
        t.grad = None


def _default_grad(out: Tensor) -> Tensor:
    """Ones for a one-element output (a loss: the gradients are exactly d loss / d input), else a
    standard normal from seed 0 with ``out``'s shape, dtype, device and memory layout."""
    if out.numel() == 1:
        return torch.ones_like(out)
    noise = torch.randn(out.shape, generator=torch.Generator().manual_seed(0))
    return torch.empty_like(out).copy_(noise)


def op_step(call: Callable[[], Tensor], leaves: Sequence[Tensor], mode: str, grad: Optional[Tensor] = None,
            accumulate: bool = True) -> Step:
    """The ``Step`` that times ``call()`` (which returns one tensor) in one of ``MODES``:

    * ``"forward"``: ``call()`` under ``torch.no_grad()``;
    * ``"backward"``: ``prepare`` runs ``call()`` with autograd on (untimed) and the timed part is
      only the backward from its output;
    * ``"full"``: forward and backward, both timed.

    ``leaves`` are the tensors with ``requires_grad`` that ``call`` uses. The backward is
    ``out.backward(grad)`` into the leaves' ``.grad``, which ``prepare`` sets to None before every
    call so that no gradient accumulation is timed; with ``accumulate=False`` it is
    ``torch.autograd.grad(out, leaves, grad)`` instead (nothing is written to ``.grad``; the
    gradients are returned). ``grad`` (the output's gradient, same shape as ``out``) is fixed for
    all calls; by default it is made on the first call (a warm-up one): ones for a one-element
    output such as a loss, else a standard normal from seed 0 in ``out``'s layout."""
    if mode not in MODES:
        raise ValueError(f"mode: expected one of {MODES}, got {mode!r}")
    leaves = list(leaves)
    state = {"grad": grad}

    def backward(out: Tensor) -> object:
        if state["grad"] is None:
            state["grad"] = _default_grad(out)
        if accumulate:
            out.backward(state["grad"])
            return None
        return torch.autograd.grad(out, leaves, state["grad"])

    if mode == "forward":
        def run_forward(_arg: object) -> Tensor:
            with torch.no_grad():
                return call()
        return Step(run=run_forward)

    if mode == "backward":
        def prepare_backward() -> Tensor:
            _zero_grads(leaves)
            with torch.enable_grad():
                return call()
        return Step(run=backward, prepare=prepare_backward)

    def run_full(_arg: object) -> object:
        with torch.enable_grad():
            return backward(call())
    return Step(run=run_full, prepare=lambda: _zero_grads(leaves))


def try_step(step: Union[Step, Callable[[], object]]) -> Optional[str]:
    """Runs ``step`` once; None if it works, else the first line of the error (for a peer without,
    e.g., a bf16 kernel, which is then reported instead of measured)."""
    step = _as_step(step)
    try:
        step.run(step.prepare() if step.prepare is not None else None)
    except (RuntimeError, NotImplementedError, TypeError) as exc:
        return (str(exc).splitlines() or [type(exc).__name__])[0][:80]
    return None


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
        "logical_cpus": os.cpu_count(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "hybridops": hybridops.build_info(),
        "git_sha": git_sha(),
        "date": utc_timestamp(),
        "python": platform.python_version(),
    }


def print_table(rows: Sequence[Row], header: bool = True) -> None:
    """One line per row: op, case, mode, dtype, ours and peer p50, speedup, peer name."""
    w_op = max([16] + [len(r.op) for r in rows])
    w_case = max([28] + [len(r.case) for r in rows])
    if header:
        line = (f"{'op':<{w_op}} {'case':<{w_case}} {'mode':<9} {'dtype':<9} {'ours p50 ms':>12} "
                f"{'peer p50 ms':>12} {'speedup':>8}  peer")
        print(line)
        print("-" * len(line))
    for r in rows:
        peer = f"{r.peer.p50_ms:12.3f}" if r.peer else f"{'-':>12}"
        speed = f"{r.speedup:7.2f}x" if r.speedup else f"{'-':>8}"
        print(f"{r.op:<{w_op}} {r.case:<{w_case}} {r.mode:<9} {r.dtype:<9} {r.ours.p50_ms:12.3f} {peer} {speed}  "
              f"{r.peer_name}")


def _group_value(row: Row, key: str) -> object:
    """``row.<key>`` for a Row field (e.g. ``dtype``), else ``row.extra[key]``."""
    return getattr(row, key) if key in Row.__dataclass_fields__ else row.extra.get(key)


def geomean(values: Sequence[float]) -> float:
    """Geometric mean of positive values, kept inside [min, max]: exp(mean(log)) alone can round
    just outside (exp(log(145.88895080160944)) == 145.88895080160947)."""
    mean = math.exp(sum(math.log(x) for x in values) / len(values))
    return min(max(mean, min(values)), max(values))


def summarize(rows: Sequence[Row], by: Sequence[str] = (), show: bool = True) -> dict[str, dict]:
    """Speedup (peer p50 / ours p50; > 1 means ours is faster) per (mode, *by, peer_name) group.

    ``by`` names extra grouping keys: Row fields (``"dtype"``) or keys of ``Row.extra``
    (``"layout"``). Rows without a peer timing are left out. Returns, in first-seen order,
    ``{"<mode> | <by values...> | <peer_name>": {"mode", *by, "peer_name", "geomean", "min", "max",
    "n"}}`` and, with ``show``, prints one line per group."""
    groups: dict[tuple, list[float]] = {}
    for r in rows:
        if r.speedup is None:
            continue
        key = (r.mode, *(_group_value(r, k) for k in by), r.peer_name)
        groups.setdefault(key, []).append(r.speedup)
    summary = {}
    for key, ratios in groups.items():
        entry = {"mode": key[0], **dict(zip(by, key[1:-1])), "peer_name": key[-1],
                 "geomean": geomean(ratios), "min": min(ratios), "max": max(ratios), "n": len(ratios)}
        summary[" | ".join(str(k) for k in key)] = entry
    if show:
        print("\n# speedup = peer p50 / ours p50 (> 1 means ours is faster)")
        width = max([10] + [len(k) for k in summary])
        for name, v in summary.items():
            print(f"{name:<{width}}  geomean {v['geomean']:6.2f}  min {v['min']:6.2f}  max {v['max']:6.2f}  "
                  f"({v['n']} rows)")
    return summary


_PAYLOAD_KEYS = ("benchmark", "environment", "rows")


def write_json(rows: Sequence[Row], device: torch.device, name: str, path: Optional[str] = None,
               extra: Optional[dict] = None) -> str:
    """Writes ``{"benchmark": name, "environment": ..., **extra, "rows": [...]}`` to ``path`` (default
    ``results/<name>-<cpu|cuda-GPU_name>-<date>.json``); returns the path.

    Each row is the ``Row`` as a dict (``ours``/``peer`` Timings as dicts) plus its ``speedup``.
    ``extra`` adds payload-level keys (e.g. ``{"summary": summarize(rows)}``); it may not replace
    ``benchmark``, ``environment`` or ``rows``."""
    device = torch.device(device)
    extra = dict(extra or {})
    clash = [k for k in _PAYLOAD_KEYS if k in extra]
    if clash:
        raise ValueError(f"extra: keys {clash} are reserved")
    env = environment(device)
    if path is None:
        tag = "cuda-" + env["device_name"].replace(" ", "_") if device.type == "cuda" else "cpu"
        stamp = env["date"][:19].replace(":", "").replace("-", "")
        path = os.path.join(RESULTS_DIR, f"{name}-{tag}-{stamp}.json")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    payload = {"benchmark": name, "environment": env, **extra,
               "rows": [dict(asdict(r), speedup=r.speedup) for r in rows]}
    with open(path, "w") as f:
        json.dump(payload, f, indent=1)
    return path
