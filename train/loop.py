"""The training loop: data, model, loss, optimiser, AMP, the epochs with their validation, early stopping,
checkpoints, resume, DDP, and the final evaluation of the best checkpoint on the test split.

Its parts live by concern: ``train.config`` (the run's settings: recipe + dataset defaults + flags),
``train.step`` (loss, optimiser, schedule, one epoch of training steps, validation), ``train.report``
(what the user sees: console lines, ``config.json``, ``metrics.jsonl``, ``curves.png``) and
``cli.provenance`` (versions, git sha, command line); this module runs them in order.

Outputs of a run (``--out DIR``)::

    config.json       every setting of the run (after recipe and flags)
    metrics.jsonl     one JSON line per finished epoch: lr, train loss, speed, validation metrics
    curves.png        training loss and validation metrics per epoch
    last.pt / best.pt checkpoints (best by the monitored validation metric; last every epoch)
    eval/             metrics.json, metrics.md, probability maps and overlays of best.pt on the test split

Reproducibility: every epoch reseeds the data order (``seed + epoch``), the augmentation generator and
torch's global RNG from ``(seed, epoch, rank)``, so a resumed run continues exactly as an uninterrupted
one would (bit for bit on the CPU; ``--deterministic`` asks for deterministic GPU kernels too).
"""
from __future__ import annotations

import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from cli.args import check_input_size
from cli.errors import CheckpointError, UserError
from cli.provenance import versions
from models.checkpoint import create_model, first_nonfinite, load_state
from train import checkpoint as ckpt_io
from train import distributed as D
from train import report
from train.augment import Augment
from train.config import RESUMABLE_OVERRIDES, check_config
from train.data import available_splits, build_dataset
from train.memory import check_training_memory
from train.metrics import nan_to_none
from train.data.crops import CropDataset, EpochSampler, native_item
from train.schedule import lr_for
from train.step import MEAN, STD, epoch_seed, make_loss, make_optimizer, train_epoch, unwrap, validate

__all__ = ["train"]


def _check_out(cfg: dict, resume: bool, overwrite: bool, info: D.DistInfo) -> Path:
    """``--out`` as a path, if a run may be written there; creates nothing (see :func:`_make_out`)."""
    out = Path(cfg["out"])
    problem = None
    if info.is_main:
        if out.exists() and not out.is_dir():
            problem = f"--out {str(out)!r} exists and is not a folder"
        elif not resume and (out / "last.pt").exists() and not overwrite:
            problem = (f"--out {str(out)!r} already holds a run (last.pt); continue it with --resume, "
                       "start over with --overwrite, or pick another --out")
    problem = D.broadcast_object(problem, info)       # every rank stops together, none waits forever
    if problem:
        raise UserError(problem)
    return out


def _make_out(out: Path, resume: bool, overwrite: bool, info: D.DistInfo) -> None:
    """Creates ``--out`` (rank 0), once every input has been checked: a bad argument leaves no folder."""
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
        if not resume and overwrite:
            for name in ("metrics.jsonl", "best.pt", "last.pt", "curves.png"):
                (out / name).unlink(missing_ok=True)


def _datasets(cfg: dict, info: D.DistInfo):
    common = dict(size=cfg["size"], in_chans=cfg["in_chans"], limit=cfg["limit"], seed=cfg["seed"],
                  observer=cfg["observer"])
    train_ds = build_dataset(cfg["dataset"], cfg["data_root"], "train", num_classes=cfg["num_classes"], **common)
    cfg["num_classes"] = train_ds.num_classes
    cfg["class_names"] = train_ds.class_names
    n = len(train_ds)
    train_idx, val_ds, val_idx = list(range(n)), None, []
    mode = cfg["val"]
    if mode == "auto":
        mode = "split" if "val" in available_splits(cfg["dataset"], cfg["data_root"]) else "holdout"
    if mode == "split":
        val_ds = build_dataset(cfg["dataset"], cfg["data_root"], "val", num_classes=train_ds.num_classes, **common)
        val_idx = list(range(len(val_ds)))
    elif mode == "test":
        val_ds = build_dataset(cfg["dataset"], cfg["data_root"], "test", num_classes=train_ds.num_classes, **common)
        val_idx = list(range(len(val_ds)))
    elif mode == "holdout":
        k = max(1, int(round(cfg["val_fraction"] * n)))
        if n - k < 1:
            raise UserError(f"{train_ds.describe()}: too few images to hold {k} out for validation "
                            "(use --val none or --val test)")
        g = torch.Generator().manual_seed(cfg["seed"])
        perm = torch.randperm(n, generator=g).tolist()
        val_idx, train_idx = sorted(perm[:k]), sorted(perm[k:])
        val_ds = train_ds
    cfg["val_resolved"] = mode
    cfg["val_ids"] = [val_ds.ids[i] for i in val_idx] if val_ds is not None else []
    return train_ds, train_idx, val_ds, val_idx


def _build_model(cfg: dict) -> nn.Module:
    """The run's model (its input channels and classes from the data, the rest from ``--model-kwargs``);
    checks that ``--size`` suits it."""
    for key, flag in (("in_chans", "--in-chans"), ("num_classes", "--num-classes or the dataset")):
        if key in cfg["model_kwargs"] and cfg["model_kwargs"][key] != cfg[key]:
            raise UserError(f"--model-kwargs sets {key}={cfg['model_kwargs'][key]!r}, but the data has {cfg[key]} "
                            f"(set by {flag}); leave {key} out of --model-kwargs")
    kwargs = {"in_chans": cfg["in_chans"], "num_classes": cfg["num_classes"], **cfg["model_kwargs"]}
    model = create_model(cfg["model"], kwargs, source="--model-kwargs", shown=cfg["model_kwargs"])
    cfg["model_kwargs_resolved"] = kwargs
    check_input_size(cfg["size"], int(getattr(model, "input_divisor", 16)), cfg["model"])
    return model



def _payload(cfg, model, opt, scaler, epoch, best, bad_epochs, metrics) -> dict:
    return {
        "format": ckpt_io.FORMAT, "model": cfg["model"], "model_kwargs": cfg["model_kwargs_resolved"],
        "state_dict": unwrap(model).state_dict(),
        "data": {"dataset": cfg["dataset"], "data_root": cfg["data_root"], "size": list(cfg["size"]),
                 "in_chans": cfg["in_chans"], "num_classes": cfg["num_classes"], "class_names": cfg["class_names"],
                 "observer": cfg["observer"], "seed": cfg["seed"], "mean": MEAN, "std": STD,
                 "native": cfg.get("crop") is not None},
        "config": {k: v for k, v in cfg.items() if k not in ("model_kwargs_resolved",)},
        "epoch": epoch, "best": best, "bad_epochs": bad_epochs,
        "optimizer": opt.state_dict(), "scaler": scaler.state_dict() if scaler is not None else None,
        "metrics": nan_to_none(metrics), "versions": versions(),
    }


def train(cfg: dict, *, resume: Optional[str] = None, overwrite: bool = False) -> dict:
    """Runs training (and the final evaluation) for a config from :func:`train.config.make_config`; returns
    a summary.

    ``resume``: a checkpoint to continue from. Its config is used; ``cfg`` then holds only ``out`` and
    the flags given on the command line among ``RESUMABLE_OVERRIDES`` (e.g. more ``epochs``).
    """
    state = None
    if resume:
        state = ckpt_io.load(resume, purpose="resume")
        saved = dict(state["config"])
        saved.pop("stopped", None)                 # a --max-minutes stop belongs to the run that made it
        saved.update({k: v for k, v in cfg.items() if k in RESUMABLE_OVERRIDES or k == "out"})
        cfg = saved
        try:
            check_config(cfg, multiclass=(cfg.get("num_classes") or 1) > 1)
        except KeyError as e:
            raise CheckpointError(f"checkpoint {str(resume)!r} is damaged or incomplete: its 'config' has "
                                          f"no {e.args[0]!r} entry") from None
    info = D.setup(cfg["device"])
    try:
        summary = _train(cfg, info, resume, state, overwrite)
        # Every rank is done (rank 0 evaluates alone at the end) before any rank tears the process
        # group down: a gloo rank whose peer destroys the group under it can abort ("terminate called
        # without an active exception", seen once in CI). Not on an error path, where a barrier
        # would wait for a rank that is gone.
        D.barrier(info)
        return summary
    finally:
        D.cleanup(info)


@dataclass
class _Run:
    """What the epochs of a run share: settings, data, model, optimiser, and the state a checkpoint keeps."""
    cfg: dict
    info: D.DistInfo
    out: Path
    train_ds: object
    train_idx: list
    val_ds: object
    val_idx: list
    model: nn.Module
    loss_fn: nn.Module
    opt: torch.optim.Optimizer
    scaler: Optional[torch.amp.GradScaler]
    augment: Optional[Augment]
    multiclass: bool
    start_epoch: int = 0
    best: dict = field(default_factory=dict)
    bad_epochs: int = 0
    records: list = field(default_factory=list)
    sampler: object = None
    loader: object = None
    crops: Optional[CropDataset] = None        # crop training (--crop): the crops of train_idx
    stop_at: Optional[float] = None            # --max-minutes: time.perf_counter() deadline


def _train(cfg: dict, info: D.DistInfo, resume: Optional[str], state: Optional[dict], overwrite: bool) -> dict:
    _process_settings(cfg)
    out = _check_out(cfg, bool(resume), overwrite, info)
    run = _prepare(cfg, info, out, resume, overwrite)
    if state is not None:
        _restore(run, state, resume)
    run.records = report.start_files(out, cfg, run.start_epoch) if info.is_main else []
    report.banner(info, cfg, n_params=sum(p.numel() for p in unwrap(run.model).parameters()),
                  data=run.train_ds.describe(), n_train=len(run.train_idx), n_val=len(run.val_idx),
                  augment=run.augment, out=out, resume=resume, start_epoch=run.start_epoch)
    _make_loader(run)
    done, stopped_early = _run_epochs(run)
    summary = {"out": str(out), "epochs_done": done,
               "best": run.best, "stopped_early": stopped_early, "stopped": cfg.get("stopped"), "eval": None}
    if cfg["evaluate"] and info.is_main:
        summary["eval"] = _final_evaluation(run)
    if info.is_main:
        report.list_outputs(out)
    return summary


def _process_settings(cfg: dict) -> None:
    """Threads, determinism and the initial seed of this process."""
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg["threads"]))
    if cfg["deterministic"]:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    torch.manual_seed(cfg["seed"])


def _prepare(cfg: dict, info: D.DistInfo, out: Path, resume: Optional[str], overwrite: bool) -> _Run:
    """Data, model, memory check, every image loaded; then ``--out`` is created and the model, loss and
    optimiser are set up on the device. Everything that can fail on bad input runs before ``--out`` is
    created."""
    device = info.device
    train_ds, train_idx, val_ds, val_idx = _datasets(cfg, info)
    multiclass = train_ds.num_classes > 1
    model = _build_model(cfg)
    check_training_memory(model, cfg, device, len(train_idx) + len(val_idx),
                          processes_per_host=int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    # Load (and cache) every image now: a bad file fails before training starts, on every rank alike.
    t_load = time.perf_counter()
    crops = None
    if cfg.get("crop") is not None:
        crops = CropDataset(train_ds, train_idx, cfg["crop"], cfg["crops_per_image"], cfg["seed"])
        crops.preload()
    for i in train_idx if crops is None else ():
        train_ds[i]
    for i in val_idx:
        native_item(val_ds, i) if crops is not None else val_ds[i]
    report.log(info, f"loaded    {len(train_idx) + len(val_idx)} images in {time.perf_counter() - t_load:.1f} s")
    if cfg["init_from"] and not resume:
        ckpt_io.load_weights(model, cfg["model"], cfg["init_from"])
    _make_out(out, bool(resume), overwrite, info)
    model.to(device)
    if info.enabled:
        # HybridNetSeg's side outputs feed only the mixed loss; with any other loss their 1x1 convs get
        # no gradient, which DDP must be told about.
        unused = cfg["model"] == "hybridnetseg" and (cfg["loss"] != "mixed" or multiclass)
        model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                                    find_unused_parameters=unused)
    loss_fn = make_loss(cfg["loss"], multiclass, cfg["alpha"]).to(device)
    opt = make_optimizer(cfg, unwrap(model).parameters())
    scaler = torch.amp.GradScaler("cuda") if (cfg["amp"] and device.type == "cuda") else None
    augment = Augment.from_dict(cfg["augment"]) if cfg["augment"] else None
    return _Run(cfg, info, out, train_ds, train_idx, val_ds, val_idx, model, loss_fn, opt, scaler, augment, multiclass,
                best={"epoch": None, "value": None, "monitor": cfg["monitor"]}, crops=crops)


def _restore(run: _Run, state: dict, resume: str) -> None:
    """Weights, optimiser, scaler, epoch and early-stopping state from a ``--resume`` checkpoint."""
    load_state(unwrap(run.model), state["state_dict"], resume, "--resume checkpoint")
    run.opt.load_state_dict(state["optimizer"])
    if run.scaler is not None and state.get("scaler"):
        run.scaler.load_state_dict(state["scaler"])
    run.start_epoch, run.best, run.bad_epochs = int(state["epoch"]), dict(state["best"]), int(state["bad_epochs"])


def _make_loader(run: _Run) -> None:
    """This rank's shard of the training images (or their crops), reshuffled each epoch (``sampler.set_epoch``)."""
    cfg, info = run.cfg, run.info
    subset = run.crops if run.crops is not None else torch.utils.data.Subset(run.train_ds, run.train_idx)
    run.sampler = torch.utils.data.distributed.DistributedSampler(
        subset, num_replicas=info.world_size, rank=info.rank, shuffle=True, seed=cfg["seed"], drop_last=False)
    if run.crops is not None:
        run.sampler = EpochSampler(run.sampler)       # the crops of an epoch depend on (seed, epoch, index)
    run.loader = torch.utils.data.DataLoader(
        subset, batch_size=cfg["batch_size"], sampler=run.sampler, num_workers=cfg["workers"],
        persistent_workers=cfg["workers"] > 0, pin_memory=info.device.type == "cuda", drop_last=False)


def _run_epochs(run: _Run) -> tuple[int, bool]:
    """Trains from ``run.start_epoch`` to ``--epochs`` or until early stopping; returns (epochs done,
    stopped early)."""
    cfg, info = run.cfg, run.info
    done = run.start_epoch
    if cfg.get("max_minutes"):
        run.stop_at = time.perf_counter() + 60.0 * cfg["max_minutes"]
    stopped_early = bool(cfg["patience"]) and run.bad_epochs >= cfg["patience"]
    if stopped_early:
        report.log(info, f"the run had stopped early (no {cfg['monitor']} improvement in {run.bad_epochs} "
                         "validations); pass a larger --patience to train on")
    for epoch in range(run.start_epoch, cfg["epochs"] if not stopped_early else run.start_epoch):
        val = _epoch(run, epoch)
        done = epoch + 1
        D.barrier(info)
        if _time_is_up(run, epoch):
            stopped_early = True
            break
        if cfg["patience"] and val is not None and run.bad_epochs >= cfg["patience"]:
            report.log(info, f"early stopping: no {cfg['monitor']} improvement in {run.bad_epochs} validations "
                             f"(best {run.best['value']:.4f} at epoch {run.best['epoch']})")
            stopped_early = True
            break
    return done, stopped_early


def _stop_record(cfg: dict, epoch: int, partial: Optional[dict] = None) -> dict:
    """What ``config.json`` records (as ``stopped``) of a ``--max-minutes`` stop after ``epoch`` (from 0),
    with ``partial`` (images done, of how many) when the stop came inside that epoch."""
    rec = {"reason": "max_minutes", "max_minutes": cfg["max_minutes"], "after_epoch": epoch + 1,
           "epochs_planned": cfg["epochs"]}
    if partial is not None:
        rec["partial_epoch"] = dict(partial)
    return rec


def _time_is_up(run: _Run, epoch: int) -> bool:
    """After an epoch: True when ``--max-minutes`` has run out and the run stops here (with epochs left),
    recorded in ``config.json`` (``stopped``) and, by the epoch, in ``metrics.jsonl``."""
    cfg, info = run.cfg, run.info
    up = "stopped" in cfg or (run.stop_at is not None and epoch + 1 < cfg["epochs"]
                              and time.perf_counter() >= run.stop_at)
    if not D.broadcast_object(up, info):          # every rank stops after the same epoch
        return False
    cfg.setdefault("stopped", _stop_record(cfg, epoch))
    report.log(info, f"--max-minutes {cfg['max_minutes']:g}: stopping after epoch {epoch + 1} of {cfg['epochs']} "
                     f"(last.pt and best.pt hold it)")
    if info.is_main:
        report.write_config(run.out, cfg)
    return True


def _epoch(run: _Run, epoch: int) -> Optional[dict]:
    """One epoch: train, validate when due, track the best, save and report; returns the validation
    summary (None when this epoch did not validate)."""
    cfg, info, device = run.cfg, run.info, run.info.device
    run.sampler.set_epoch(epoch)
    seed = epoch_seed(cfg["seed"], epoch, info.rank)
    torch.manual_seed(seed)
    gen = torch.Generator(device=device).manual_seed(seed)
    n_steps = len(run.loader)
    lr = lr_for(cfg, epoch, 0, n_steps)
    for group in run.opt.param_groups:
        group["lr"] = lr
    run.model.train()
    t0 = time.perf_counter()
    bar = report.progress_bar(info, cfg, epoch, n_steps)
    per_step = (lambda b: lr_for(cfg, epoch, b, n_steps)) if cfg.get("schedule") == "cosine" else None
    # Within an epoch the clock is checked per batch only in a single process (DDP ranks must agree).
    total, seen = train_epoch(run.model, run.loader, run.loss_fn, run.opt, device, amp=cfg["amp"], scaler=run.scaler,
                              augment=run.augment, gen=gen, bar=bar, world_size=info.world_size, lr_fn=per_step,
                              stop_at=None if info.enabled else run.stop_at)
    if bar is not None:
        bar.close()
    sums = D.all_reduce_sum([total.item(), float(seen)], info)
    train_loss = sums[0] / max(sums[1], 1.0)
    _check_finite(run, epoch, train_loss)
    speed = sums[1] / (time.perf_counter() - t0)

    val = None
    if run.val_ds is not None and ((epoch + 1) % cfg["val_every"] == 0 or epoch + 1 == cfg["epochs"]):
        val = validate(run.model, run.val_ds, run.val_idx, device, cfg, run.multiclass, info,
                       batch_size=max(1, cfg["batch_size"])).summary()
    improved = _track_best(run, epoch, val)
    rec = {"epoch": epoch + 1, "lr": lr, "train_loss": train_loss, "time_s": round(time.perf_counter() - t0, 3),
           "images_per_s": round(speed, 3), "val": nan_to_none(val), "best": improved}
    if seen < len(run.sampler) and not info.enabled:       # --max-minutes ran out inside this epoch
        partial = {"images": seen, "of": len(run.sampler)}
        cfg["stopped"] = _stop_record(cfg, epoch, partial)
        rec["stopped"] = "max_minutes"
        rec["partial"] = partial
    if info.is_main:
        _save(run, epoch, rec, improved)
        report.append_record(run.out, run.records, rec, cfg["monitor"])
        print(report.epoch_line(cfg, rec, val, run.multiclass, speed), flush=True)
    return val


def _check_finite(run: _Run, epoch: int, train_loss: float) -> None:
    """Stops the run when the loss or the weights became non-finite. Checked after the reduction (and on
    weights identical on every rank): every rank stops together, and no checkpoint of a diverged model
    is written."""
    nonfinite = None if not math.isfinite(train_loss) else first_nonfinite(unwrap(run.model).state_dict())
    if not math.isfinite(train_loss) or nonfinite:
        what = f"the training loss became {train_loss}" if nonfinite is None else \
            f"the weights became non-finite ({nonfinite})"
        kept = f"last finite epoch saved in {run.out / 'last.pt'}" if epoch > 0 else "nothing was saved"
        raise UserError(f"{what} in epoch {epoch + 1} ({kept}); lower --lr or turn off --amp")


def _track_best(run: _Run, epoch: int, val: Optional[dict]) -> bool:
    """Updates ``run.best`` and ``run.bad_epochs`` after an epoch; True when this epoch is the new best
    (every epoch is, without validation data)."""
    cfg = run.cfg
    improved = False
    if val is None and run.val_ds is None:
        improved = True                        # no validation: best = last
    elif val is not None:
        v, cur = val[cfg["monitor"]], run.best["value"]
        if cur is None or (math.isnan(cur) and not math.isnan(v)) or v > cur:
            run.best = {"epoch": epoch + 1, "value": v, "monitor": cfg["monitor"]}
            improved, run.bad_epochs = True, 0
        else:
            run.bad_epochs += 1
    if run.val_ds is None:
        run.best = {"epoch": epoch + 1, "value": None, "monitor": None}
    return improved


def _save(run: _Run, epoch: int, rec: dict, improved: bool) -> None:
    """Writes ``last.pt`` (and replaces ``best.pt`` by it when the epoch improved)."""
    out = run.out
    payload = _payload(run.cfg, run.model, run.opt, run.scaler, epoch + 1, run.best, run.bad_epochs, rec)
    ckpt_io.save(out / "last.pt", payload)
    if improved:
        shutil.copyfile(out / "last.pt", out / "best.tmp")
        os.replace(out / "best.tmp", out / "best.pt")


def _final_evaluation(run: _Run) -> str:
    """Evaluates ``best.pt`` (``last.pt`` if there is none) on the test split into ``--out/eval``."""
    from train.evaluate import evaluate_checkpoint

    out, cfg = run.out, run.cfg
    ckpt_path = out / "best.pt" if (out / "best.pt").exists() else out / "last.pt"
    report.log(run.info, f"evaluating {ckpt_path.name} on the test split ...")
    res = evaluate_checkpoint(ckpt_path, split="test", out=out / "eval", device=str(run.info.device),
                              progress=cfg["progress"], limit=cfg["limit"])
    report.log(run.info, res["table"].split("\n## ")[0].rstrip())
    return str(out / "eval")
