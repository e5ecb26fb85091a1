"""The paper's Table 5, done right: params, GMACs, size and latency of HybridNetSeg vs U-Net.

    python -m benchmarks.latency [--device cpu|cuda] [--quick] [--sizes H W [H W ...]]
                                 [--dtypes float32 float16 bfloat16] [--compile] [--no-train]
                                 [--no-onnx] [--json PATH] [--time-limit SECONDS]

Models: HybridNetSeg on hybridops kernels; HybridNetSeg on the peer ops (torchvision's
deform_conv2d when installed, else hybridops.reference; MixConv as split/conv/cat) with the same
weights; U-Net; the lumbar MSFF network (1-channel input, 8 classes). For each: parameters (M),
GMACs (ptflops convention, models.complexity), state-dict size (MB), inference latency at batch 1
(median with p20/p80 after warm-up; CUDA events on the GPU, perf_counter on the CPU) in each dtype,
eager and -- on CUDA by default, on the CPU with --compile -- torch.compile (CUDA: mode
"reduce-overhead", i.e. CUDA graphs; every dtype for HybridNetSeg on hybridops, the first dtype for
the other models). Also a training step (forward + loss + backward) at each
paper's batch size (HybridNetSeg 2 with the mixed loss, U-Net 2 with BCE+Dice, MSFF 4 with the
size-adaptive CE), and HybridNetSeg exported to ONNX and run in ONNX Runtime on the CPU (when
onnxruntime is installed). Prints a Table-5-style table naming the device and writes JSON with
device, versions, git sha and date under benchmarks/results/. The timings run most wanted first
(``run``), so ``--time-limit`` (``benchmarks._harness.TimeLimit``) keeps the table's numbers.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import tempfile
from functools import partial
from typing import Optional

import torch

import hybridops
import models
from benchmarks._harness import RESULTS_DIR, TimeLimit, Timing, add_time_limit_argument, environment, measure
from hybridops import losses

PEER_OPS = {"deform_conv": "torchvision", "mixconv": "reference"}


def model_specs() -> list[dict]:
    """(label, constructor, input channels, size divisor, training batch, loss factory)."""
    try:
        import torchvision  # noqa: F401
        peer = PEER_OPS
        peer_label = "HybridNetSeg (peer ops: torchvision DCN, split MixConv)"
    except ImportError:
        peer = "reference"
        peer_label = "HybridNetSeg (peer ops: pure-PyTorch reference)"
    return [
        dict(key="hybridnetseg", label="HybridNetSeg (hybridops)", build=lambda: models.create_model("hybridnetseg"),
             in_chans=3, batch=2, loss=lambda: losses.MixedLoss(), target="binary"),
        dict(key="hybridnetseg_peer", label=peer_label,
             build=lambda: models.create_model("hybridnetseg", ops=peer),
             in_chans=3, batch=2, loss=lambda: losses.MixedLoss(), target="binary"),
        dict(key="unet", label="U-Net", build=lambda: models.create_model("unet"), in_chans=3, batch=2,
             loss=lambda: losses.BCEDiceLoss(), target="binary"),
        dict(key="msffnet", label="MSFF (lumbar, 8 classes)", build=lambda: models.create_model("msffnet"),
             in_chans=1, batch=4, loss=lambda: losses.SizeAdaptiveCELoss(), target="classes"),
    ]


def _timing_dict(t: Optional[Timing]) -> Optional[dict]:
    return None if t is None else dict(p20_ms=t.p20_ms, p50_ms=t.p50_ms, p80_ms=t.p80_ms, reps=t.reps,
                                       peak_mib=t.peak_mib)


def _inference(model, x, device, reps) -> Timing:
    def run():
        with torch.no_grad():
            model(x)
    return measure(run, device, warmup=2, reps=reps, max_seconds=30)


def _train_step(spec, model, size, device, dtype, reps) -> Timing:
    n = spec["batch"]
    h, w = size
    x = torch.randn(n, spec["in_chans"], h, w, device=device)
    if spec["target"] == "binary":
        target = (torch.rand(n, 1, h, w, device=device) > 0.9).float()
    else:
        target = torch.randint(0, 8, (n, h, w), device=device)
    loss_fn = spec["loss"]()
    model.train()
    autocast = torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)

    def step():
        model.zero_grad(set_to_none=True)
        with autocast:
            out = model(x)
        loss = loss_fn([o.float() for o in out] if isinstance(out, (list, tuple)) else out.float(), target)
        loss.backward()
    try:
        return measure(step, device, warmup=1, reps=reps, max_seconds=30)
    finally:
        model.eval()


def _onnx_cpu(model, size, reps) -> Optional[dict]:
    try:
        from hybridops.deploy import export_onnx, onnx_session
    except ImportError:
        return None
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return None
    cpu_model = model.to("cpu").float().eval()
    x = torch.randn(1, 3, *size)
    with tempfile.TemporaryDirectory() as tmp:
        path = export_onnx(cpu_model, x, os.path.join(tmp, "m.onnx"))
        session = onnx_session(path)
        feed = {session.get_inputs()[0].name: x.numpy()}
        ort = measure(lambda: session.run(None, feed), torch.device("cpu"), warmup=2, reps=reps, max_seconds=30)
    torch_cpu = _inference(cpu_model, x, torch.device("cpu"), reps)
    return dict(size=list(size), onnxruntime=_timing_dict(ort), pytorch_cpu=_timing_dict(torch_cpu),
                onnxruntime_threads=torch.get_num_threads())


def _error(exc: Exception) -> dict:
    return dict(error=f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}")


def _time_inference(entry: dict, spec: dict, model, size: tuple[int, int], dtype: torch.dtype, mode: str,
                    device: torch.device, reps: int) -> None:
    """Appends to ``entry["inference"]`` the latency of ``model`` in ``dtype`` at batch 1, eager or
    (any other ``mode``) torch.compile'd; an error is reported in the entry, not raised."""
    m = model.to(dtype=dtype)
    x = torch.randn(1, spec["in_chans"], *size, device=device, dtype=dtype)
    try:
        if mode != "eager":
            m = torch.compile(m, mode="reduce-overhead" if device.type == "cuda" else None)
        res = _timing_dict(_inference(m, x, device, reps))
    except Exception as exc:  # noqa: BLE001 - report, keep benchmarking
        res = _error(exc)
    finally:
        model.float()
    print(f"{spec['label']:<55} {size} {str(dtype):<15} {mode:<22} "
          f"{res.get('p50_ms', float('nan')):10.2f} ms {res.get('error', '')}", flush=True)
    entry["inference"].append(dict(size=list(size), dtype=str(dtype).replace("torch.", ""), mode=mode, **res))


def _time_train(entry: dict, spec: dict, model, size: tuple[int, int], dtype: torch.dtype, device: torch.device,
                reps: int) -> None:
    """Appends to ``entry["train_step"]`` the time of one training step (an error is reported in the
    entry, not raised)."""
    try:
        res = _timing_dict(_train_step(spec, model, size, device, dtype, reps))
    except Exception as exc:  # noqa: BLE001
        res = _error(exc)
    print(f"{spec['label']:<55} train step b{spec['batch']} {str(dtype):<15} "
          f"{res.get('p50_ms', float('nan')):10.2f} ms {res.get('error', '')}", flush=True)
    entry["train_step"].append(dict(size=list(size), batch=spec["batch"], dtype=str(dtype).replace("torch.", ""),
                                    **res))


def _time_onnx(entry: dict, model, size: tuple[int, int], device: torch.device, reps: int) -> None:
    """``entry["onnxruntime_cpu"]``: ``_onnx_cpu`` (an error is reported in the entry, not raised);
    ``model`` goes back to ``device`` afterwards."""
    try:
        entry["onnxruntime_cpu"] = _onnx_cpu(model, size, reps)
    except Exception as exc:  # noqa: BLE001
        entry["onnxruntime_cpu"] = _error(exc)
    finally:
        model.to(device)


def run(device: torch.device, sizes: list[tuple[int, int]], dtypes: list[torch.dtype], compile_: bool, train: bool,
        onnx: bool, quick: bool, keys: Optional[list[str]] = None, limit: Optional[TimeLimit] = None,
        results: Optional[list[dict]] = None) -> dict:
    """Every model's static columns, then its timings, most wanted first so that a ``limit`` keeps
    the Table-5 numbers: eager inference (every model in the first dtype before the next dtype),
    training steps, compiled inference (every dtype for HybridNetSeg on hybridops, the first dtype
    for the others: each compile costs tens of seconds), ONNX Runtime. The entries go into
    ``results`` (one dict per model, filled as the timings come) and ``{"models": results}`` is returned."""
    limit = limit or TimeLimit()
    reps = 3 if quick else (5 if device.type == "cpu" else 50)
    results = [] if results is None else results
    built = []
    for spec in model_specs():
        if keys and spec["key"] not in keys:
            continue
        torch.manual_seed(0)
        model = spec["build"]().to(device).eval()
        cx = models.complexity(model, (spec["in_chans"], *sizes[0]))
        results.append(dict(model=spec["key"], label=spec["label"], params_m=cx.params / 1e6,
                            gmacs=cx.macs_ptflops / 1e9, gmacs_conv_only=cx.macs_conv / 1e9, size_mb=cx.state_dict_mb,
                            gmacs_at=list(sizes[0]), inference=[], train_step=[]))
        built.append((spec, model, results[-1]))
    compiled = "compile" + ("+cudagraphs" if device.type == "cuda" else "")
    work = [partial(_time_inference, entry, spec, model, size, dtype, "eager", device, reps)
            for dtype in dtypes for spec, model, entry in built for size in sizes]
    if train:
        work += [partial(_time_train, entry, spec, model, sizes[0], dtype, device, max(2, reps // 2))
                 for dtype in dtypes for spec, model, entry in built]
    if compile_:
        work += [partial(_time_inference, entry, spec, model, size, dtype, compiled, device, reps)
                 for dtype in dtypes for spec, model, entry in built for size in sizes
                 if spec["key"] == "hybridnetseg" or dtype == dtypes[0]]
    if onnx:
        work += [partial(_time_onnx, entry, model, sizes[0], device, reps)
                 for spec, model, entry in built if spec["key"] == "hybridnetseg"]
    for item in work:
        if limit.allow():
            item()
    return dict(models=results)


def _p50(entry: dict, dtype: str = "float32", mode: str = "eager") -> Optional[float]:
    for r in entry["inference"]:
        if r["dtype"] == dtype and r["mode"] == mode and "p50_ms" in r:
            return r["p50_ms"]
    return None


def print_table(payload: dict) -> None:
    env = payload["environment"]
    size = payload["models"][0]["gmacs_at"]
    print(f"\nTable 5 (reproduced): batch 1, {size[0]}x{size[1]}, float32 eager, on {env['device_name']} "
          f"({env['device']}, {env['threads']} CPU threads), torch {env['torch']}")
    print(f"{'Model':<55} {'Params (M)':>10} {'GMACs':>8} {'Size (MB)':>10} {'Latency (s)':>12} {'p20-p80 (s)':>16}")
    for e in payload["models"]:
        r = next((r for r in e["inference"] if r["dtype"] == "float32" and r["mode"] == "eager" and "p50_ms" in r), None)
        lat = f"{r['p50_ms'] / 1e3:12.4f}" if r else f"{'-':>12}"
        rng = f"{r['p20_ms'] / 1e3:.4f}-{r['p80_ms'] / 1e3:.4f}" if r else "-"
        print(f"{e['label']:<55} {e['params_m']:10.3f} {e['gmacs']:8.2f} {e['size_mb']:10.2f} {lat} {rng:>16}")
    by_key = {e["model"]: e for e in payload["models"]}
    ours, peer, unet = (by_key.get(k) for k in ("hybridnetseg", "hybridnetseg_peer", "unet"))
    if ours is None:
        return
    o, p, u = _p50(ours), peer and _p50(peer), unet and _p50(unet)
    if o and p:
        print(f"HybridNetSeg on hybridops vs on peer ops: {p / o:.2f}x faster (inference)")
    if o and u:
        print(f"HybridNetSeg (hybridops) vs U-Net: {u / o:.2f}x faster (inference)")
    ot = next((r["p50_ms"] for r in ours["train_step"] if r["dtype"] == "float32" and "p50_ms" in r), None)
    ut = unet and next((r["p50_ms"] for r in unet["train_step"] if r["dtype"] == "float32" and "p50_ms" in r), None)
    if ot and ut:
        print(f"training step: HybridNetSeg {ot / 1e3:.3f} s vs U-Net {ut / 1e3:.3f} s ({ut / ot:.2f}x)")
    onnx = ours.get("onnxruntime_cpu")
    if onnx and "onnxruntime" in onnx:
        print(f"HybridNetSeg {onnx['size']} on the CPU: ONNX Runtime {onnx['onnxruntime']['p50_ms'] / 1e3:.4f} s, "
              f"PyTorch + hybridops {onnx['pytorch_cpu']['p50_ms'] / 1e3:.4f} s")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="CI-sized: 64x64, few repetitions")
    parser.add_argument("--sizes", nargs="+", type=int, default=None, metavar="H W",
                        help="input sizes as H W pairs (default 512 512; the first is used for GMACs/training)")
    parser.add_argument("--dtypes", nargs="+", default=None, help="default float32 (CPU); float32 float16 bfloat16 (CUDA)")
    parser.add_argument("--compile", action="store_true", help="also torch.compile (default on CUDA)")
    parser.add_argument("--no-train", action="store_true", help="skip the training-step timing")
    parser.add_argument("--no-onnx", action="store_true", help="skip the ONNX Runtime CPU timing")
    parser.add_argument("--models", nargs="+", default=None,
                        help="subset of: hybridnetseg hybridnetseg_peer unet msffnet (default: all)")
    parser.add_argument("--json", default=None)
    add_time_limit_argument(parser)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if args.sizes:
        if len(args.sizes) % 2:
            parser.error("--sizes takes H W pairs")
        sizes = list(zip(args.sizes[::2], args.sizes[1::2]))
    else:
        sizes = [(64, 64)] if args.quick else [(512, 512)]
    bad = [s for s in sizes if s[0] % 32 or s[1] % 32]
    if bad:
        parser.error(f"--sizes must be multiples of 32 (MSFF's factor), got {bad}")
    names = args.dtypes or (["float32"] if device.type == "cpu" else ["float32", "float16", "bfloat16"])
    dtypes = [getattr(torch, n) for n in names]
    compile_ = args.compile or device.type == "cuda"
    limit, results = TimeLimit(args.time_limit), []
    with limit.guard():
        run(device, sizes, dtypes, compile_, not args.no_train, not args.no_onnx, args.quick, args.models, limit,
            results)
    payload = dict(benchmark="latency", environment=environment(device), quick=args.quick, models=results,
                   time_limit=limit.record())
    print_table(payload)
    path = args.json
    if path is None:
        os.makedirs(RESULTS_DIR, exist_ok=True)
        tag = "cuda-" + payload["environment"]["device_name"].replace(" ", "_") if device.type == "cuda" else "cpu"
        stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S")
        path = os.path.join(RESULTS_DIR, f"latency{'-quick' if args.quick else ''}-{tag}-{stamp}.json")
    with open(path, "w") as f:
        json.dump(payload, f, indent=1)
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
