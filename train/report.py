"""What a training run tells the user and leaves on disk besides checkpoints: the start-up summary, the
progress bar, one line per epoch, ``config.json``, ``metrics.jsonl``, ``curves.png`` and the closing
list of outputs. Only rank 0 writes (the callers check ``info.is_main``; :func:`log` checks itself)."""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Optional

from cli.provenance import command_line
from train import distributed as D
from train.metrics import BINARY_METRICS, nan_to_none

__all__ = ["log", "read_jsonl", "start_files", "write_config", "banner", "progress_bar", "append_record", "epoch_line",
           "list_outputs", "OUTPUTS"]

# The files of a run's --out, in the order the closing summary lists them.
OUTPUTS = (("metrics.jsonl", "per-epoch metrics"), ("curves.png", "training curves"),
           ("best.pt", "best checkpoint"), ("last.pt", "last checkpoint (resume with --resume)"),
           ("eval/metrics.md", "test metrics table"), ("eval/metrics.json", "test metrics"),
           ("eval/overlays/", "prediction overlays"))


def log(info: D.DistInfo, *msg) -> None:
    """``print`` on rank 0 only."""
    if info.is_main:
        print(*msg, flush=True)


def read_jsonl(path: Path, upto_epoch: int) -> list[dict]:
    """The records of ``metrics.jsonl`` up to ``upto_epoch`` (a line cut short by an interruption is skipped)."""
    recs = []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                r = json.loads(line)
            except json.JSONDecodeError:
                continue          # a line cut short by an interruption
            if r.get("epoch", 0) <= upto_epoch:
                recs.append(r)
    return recs


def start_files(out: Path, cfg: dict, start_epoch: int) -> list[dict]:
    """Rewrites ``metrics.jsonl`` with the records of the epochs before ``start_epoch`` (a resumed run
    drops those of epochs it will train again) and writes ``config.json``; returns those records."""
    records = read_jsonl(out / "metrics.jsonl", start_epoch)
    with open(out / "metrics.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)
    write_config(out, cfg)
    return records


def write_config(out: Path, cfg: dict) -> None:
    """``config.json``: every setting of the run and its command line."""
    (out / "config.json").write_text(json.dumps(nan_to_none({**cfg, "command": command_line()}), indent=2) + "\n")


def banner(info: D.DistInfo, cfg: dict, *, n_params: int, data: str, n_train: int, n_val: int, augment,
           out: Path, resume: Optional[str], start_epoch: int) -> None:
    """The start-up summary: model, data, recipe, device, and where a resumed run picks up."""
    ddp = f" x {info.world_size} ranks" if info.enabled else ""
    log(info, f"model     {cfg['model']} ({n_params:,} parameters) {cfg['model_kwargs_resolved']}")
    log(info, f"data      {data}; training on {n_train}, validation: {cfg['val_resolved']} ({n_val} images)")
    log(info, f"recipe    {cfg['optimizer']} lr {cfg['lr']:g} wd {cfg['weight_decay']:g}, loss {cfg['loss']}, batch "
              f"{cfg['batch_size']}{ddp}, epochs {cfg['epochs']}, patience {cfg['patience'] or 'off'}, monitor "
              f"{cfg['monitor']}, augment {augment}")
    if cfg.get("crop"):
        log(info, f"crops     {cfg['crop'][0]}x{cfg['crop'][1]} of the native image, {cfg['crops_per_image']} per image "
                  f"per epoch; validation/evaluation on the whole native image")
    if cfg.get("schedule") == "cosine":
        log(info, f"schedule  {cfg['warmup_steps']} warm-up steps, then cosine to {cfg['min_lr']:g} per step"
                  + (f"; stops after {cfg['max_minutes']:g} min" if cfg.get("max_minutes") else ""))
    elif cfg.get("max_minutes"):
        log(info, f"time      stops after {cfg['max_minutes']:g} min of training")
    log(info, f"device    {info.device}{' (DDP, ' + str(info.world_size) + ' processes)' if info.enabled else ''}"
              f"{', AMP' if cfg['amp'] else ''}; outputs in {out}")
    if resume:
        log(info, f"resuming  from {resume} after epoch {start_epoch}"
                  + (f" (nothing left to train: --epochs is {cfg['epochs']})" if start_epoch >= cfg["epochs"] else ""))


def progress_bar(info: D.DistInfo, cfg: dict, epoch: int, n_batches: int):
    """A tqdm bar on stderr for one epoch (rank 0, unless ``--no-progress``), else None."""
    if not (info.is_main and cfg["progress"]):
        return None
    from tqdm import tqdm
    return tqdm(total=n_batches, desc=f"epoch {epoch + 1}/{cfg['epochs']}", unit="batch", leave=False,
                dynamic_ncols=True, file=sys.stderr)


def append_record(out: Path, records: list[dict], rec: dict, monitor: str) -> None:
    """Appends ``rec`` to ``records`` and ``metrics.jsonl`` and redraws ``curves.png``."""
    records.append(rec)
    with open(out / "metrics.jsonl", "a") as f:
        f.write(json.dumps(rec) + "\n")
    try:
        from train.plots import plot_curves
        plot_curves(records, out / "curves.png", monitor)
    except Exception as e:  # a plot must never stop training
        print(f"note: could not draw curves.png ({e})", file=sys.stderr)


def epoch_line(cfg: dict, rec: dict, val: Optional[dict], multiclass: bool, speed: float) -> str:
    """``epoch   3/30  lr 3.00e-03  loss 0.5123  12.34 img/s  val dice 0.7100 ...  *best`` for the epoch
    record ``rec`` (``speed``: training images per second, unrounded)."""
    vs = "" if val is None else "  val " + " ".join(
        f"{k} {val[k]:.4f}" for k in (BINARY_METRICS if not multiclass else ("mdice", "miou", "acc"))
        if k in val and val[k] is not None and not math.isnan(val[k]))
    return (f"epoch {rec['epoch']:>3}/{cfg['epochs']}  lr {rec['lr']:.2e}  loss {rec['train_loss']:.4f}  "
            f"{speed:.2f} img/s{vs}{'  *best' if rec['best'] and val is not None else ''}")


def list_outputs(out: Path) -> None:
    """The closing summary: the run's folder and each output file that exists."""
    print(f"\noutputs: {out}/", flush=True)
    for name, what in OUTPUTS:
        if (out / name).exists():
            print(f"  {str(out / name):<48} {what}")
