"""The training loop: config resolution (recipe + dataset defaults + flags), data, model, loss,
optimiser, AMP, per-epoch validation, early stopping, checkpoints, ``metrics.jsonl``, the curves plot,
resume, DDP, and the final evaluation of the best checkpoint on the test split.

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

import json
import math
import os
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from train import checkpoint as ckpt_io
from train import distributed as D
from train.augment import Augment
from train.data import available_splits, build_dataset, get_spec
from train.data.base import check_input_size
from train.errors import UserError
from train.memory import check_training_memory
from train.metrics import BINARY_METRICS, BinaryEvaluator, MulticlassEvaluator, nan_to_none
from train.recipes import LOSSES, OPTIMIZERS, default_in_chans, recipe_for

__all__ = ["make_config", "train", "make_loss", "VAL_MODES", "MEAN", "STD", "versions"]

VAL_MODES = ("auto", "holdout", "test", "none")
MEAN, STD = 0.5, 0.5          # input normalisation: (x - 0.5) / 0.5 maps [0, 1] to [-1, 1]

# Flags that may change when a run is resumed (the rest come from the checkpoint).
RESUMABLE_OVERRIDES = ("epochs", "patience", "device", "workers", "threads", "progress", "evaluate", "val_every", "amp")


def versions() -> dict:
    out = {"python": platform.python_version(), "torch": str(torch.__version__)}
    try:
        import hybridops
        out["hybridops"] = str(getattr(hybridops, "__version__", "?"))
    except Exception:  # pragma: no cover - hybridops is a dependency of models
        pass
    return out


def command_line() -> str:
    """The command that is running, as the user would type it (``python -m train ...``)."""
    import shlex

    a0 = Path(sys.argv[0]) if sys.argv and sys.argv[0] else Path("python")
    if a0.name == "__main__.py":
        prog = f"python -m {a0.parent.name}"
    elif a0.parent.name == "train" and a0.suffix == ".py":
        prog = f"python -m train.{a0.stem}"
    else:
        prog = a0.name
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        prog = f"torchrun --nproc_per_node={os.environ.get('LOCAL_WORLD_SIZE', os.environ['WORLD_SIZE'])} -m train"
    return " ".join([prog] + [shlex.quote(a) for a in sys.argv[1:]])


def git_sha() -> Optional[str]:
    try:
        import subprocess
        root = Path(__file__).resolve().parent.parent
        r = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                           timeout=5)
        return r.stdout.strip() or None
    except Exception:
        return None


# ------------------------------------------------------------------------------------------ config


def make_config(args: dict) -> dict:
    """The run's full settings from the command-line values (``None`` = not given).

    Precedence: flags > dataset overrides (synthetic: a short run) > the model's recipe > defaults.
    """
    import models

    model = args.get("model") or "hybridnetseg"
    if not models.is_model(model):
        raise UserError(f"unknown model {model!r}; available: {', '.join(models.list_models())}")
    spec = get_spec(args.get("dataset") or "synthetic")
    model_kwargs = parse_model_kwargs(args.get("model_kwargs"))
    if args.get("num_classes") is not None and spec.name != "folder":
        raise UserError(f"--num-classes is for the folder dataset; {spec.name} has a fixed set of classes")
    if spec.name == "folder" and args.get("num_classes") is None and args.get("data_root"):
        from train.data import folder
        args = dict(args, num_classes=folder.infer_num_classes(folder.records(Path(args["data_root"]), "train")))
        kind = "binary" if args["num_classes"] == 1 else f"{args['num_classes']} classes"
        print(f"note: folder labels look {kind} (pass --num-classes to say otherwise)", file=sys.stderr)
    in_chans = args.get("in_chans") or model_kwargs.get("in_chans") or default_in_chans(model)
    multiclass = (spec.binary is False) or (args.get("num_classes") or 1) > 1
    r = recipe_for(model, spec.name, multiclass)
    cfg = {
        "model": model, "model_kwargs": model_kwargs, "dataset": spec.name,
        "data_root": str(Path(args["data_root"]).resolve()) if args.get("data_root") else None,
        "size": list(args["size"]) if args.get("size") else list(spec.default_size),
        "in_chans": int(in_chans), "num_classes": args.get("num_classes"), "limit": args.get("limit"),
        "observer": args.get("observer") or 1, "seed": 0 if args.get("seed") is None else int(args["seed"]),
        "val": args.get("val") or "auto", "val_fraction": 0.2 if args.get("val_fraction") is None else args["val_fraction"],
        "val_every": 1 if args.get("val_every") is None else args["val_every"], "threshold": 0.5,
        "device": args.get("device") or "auto", "workers": args.get("workers") or 0,
        "threads": args["threads"] if args.get("threads") is not None else r.get("threads"),
        "amp": bool(args.get("amp")), "deterministic": bool(args.get("deterministic")),
        "progress": args.get("progress", True) is not False, "evaluate": args.get("evaluate", True) is not False,
        "init_from": str(Path(args["init_from"]).resolve()) if args.get("init_from") else None,
    }
    for key in ("epochs", "batch_size", "loss", "alpha", "optimizer", "lr", "weight_decay", "momentum", "lr_steps",
                "lr_gamma", "patience", "monitor"):
        cfg[key] = args[key] if args.get(key) is not None else r[key]
    cfg["augment"] = None if args.get("no_augment") else r["augment"]
    if not spec.needs_root and cfg["data_root"] is not None:
        cfg["data_root"] = None
    _check_config(cfg, multiclass)
    return cfg


def parse_model_kwargs(value) -> dict:
    """``--model-kwargs``: a JSON object (as text, or already a dict) -> a dict of constructor arguments."""
    if value is None:
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as e:
            raise UserError(f"--model-kwargs {value!r} is not valid JSON ({e}); pass an object such as "
                            "'{\"widths\": [16, 32, 64]}'") from None
    if not isinstance(value, dict):
        raise UserError(f"--model-kwargs must be a JSON object of constructor arguments such as "
                        f"'{{\"widths\": [16, 32, 64]}}', got a {type(value).__name__}: {json.dumps(value)}")
    return dict(value)


def _check_config(cfg: dict, multiclass: bool) -> None:
    """Raises :class:`UserError` for the first setting that cannot work (also run on a resumed run's
    settings, flags that override the checkpoint's included)."""
    def need(cond, msg):
        if not cond:
            raise UserError(msg)

    check_input_size(cfg["size"])
    need(cfg["epochs"] >= 1, f"--epochs must be >= 1, got {cfg['epochs']}")
    need(cfg["batch_size"] >= 1, f"--batch-size must be >= 1, got {cfg['batch_size']}")
    need(cfg["patience"] >= 0, f"--patience must be >= 0 (N: stop after N validations without improvement; "
                               f"0: no early stopping), got {cfg['patience']}")
    need(cfg["loss"] in LOSSES, f"--loss must be one of {', '.join(LOSSES)}, got {cfg['loss']!r}")
    need(cfg["optimizer"] in OPTIMIZERS, f"--optimizer must be one of {', '.join(OPTIMIZERS)}")
    f32 = torch.finfo(torch.float32).max          # the optimizers take their factors as float32 scalars
    need(0 < cfg["lr"] <= f32, f"--lr must be in (0, {f32:.3g}], got {cfg['lr']}")
    need(0 <= cfg["weight_decay"] <= f32, f"--weight-decay must be in [0, {f32:.3g}], got {cfg['weight_decay']}")
    need(0 <= cfg["momentum"] < 1, f"--momentum must be in [0, 1), got {cfg['momentum']}")
    need(math.isfinite(cfg["lr_gamma"]) and cfg["lr_gamma"] > 0, f"--lr-gamma must be > 0, got {cfg['lr_gamma']}")
    need(math.isfinite(cfg["alpha"]) and cfg["alpha"] >= 0, f"--alpha must be a finite number >= 0, got {cfg['alpha']}")
    need(cfg["val"] in VAL_MODES, f"--val must be one of {', '.join(VAL_MODES)}, got {cfg['val']!r}")
    need(0 < cfg["val_fraction"] < 1, f"--val-fraction must be in (0, 1), got {cfg['val_fraction']}")
    need(cfg["workers"] >= 0, "--workers must be >= 0")
    need(cfg["threads"] is None or cfg["threads"] >= 1, "--threads must be >= 1")
    need(cfg["val_every"] >= 1, f"--val-every must be >= 1 (validate every N epochs), got {cfg['val_every']}")
    need(cfg["in_chans"] in (1, 3), f"--in-chans must be 1 or 3, got {cfg['in_chans']}")
    need(cfg["limit"] is None or cfg["limit"] >= 1, "--limit must be >= 1")
    if multiclass:
        need(cfg["loss"] in ("ce", "sace"), f"--loss {cfg['loss']} is a binary loss; multi-class data needs ce or sace")
    else:
        need(cfg["loss"] not in ("ce", "sace"),
             f"--loss {cfg['loss']} is a multi-class loss; binary data needs mixed, bce_dice or bce "
             "(or pass --num-classes for multi-class folder data)")
    keys = set(BINARY_METRICS) if not multiclass else {"acc", "mdice", "miou"}
    need(cfg["monitor"] in keys or (multiclass and cfg["monitor"].startswith("dice_")),
         f"--monitor {cfg['monitor']!r} is not a validation metric here; use one of {', '.join(sorted(keys))}")


# ------------------------------------------------------------------------------------------ pieces


class _Loss(nn.Module):
    """Wraps the chosen loss so it accepts what the model returns (a tensor, or HybridNetSeg's list of
    maps in training mode) and the uint8 labels of the loader."""

    def __init__(self, name: str, multiclass: bool, alpha: float = 1.0) -> None:
        super().__init__()
        from hybridops.losses import BCEDiceLoss, MixedLoss, SizeAdaptiveCELoss

        self.name, self.multiclass = name, multiclass
        self.mixed, self.bce_dice = MixedLoss(), BCEDiceLoss()
        self.sace = SizeAdaptiveCELoss(alpha=alpha)

    def forward(self, out, label: Tensor) -> Tensor:
        maps = list(out) if isinstance(out, (list, tuple)) else [out]
        if self.multiclass:
            logits, target = maps[0].float(), label.long()
            return self.sace(logits, target) if self.name == "sace" else F.cross_entropy(logits, target)
        target = label[:, None].float()
        if self.name == "mixed" and len(maps) > 1:
            return self.mixed(maps, target)
        if self.name == "bce":
            return F.binary_cross_entropy_with_logits(maps[0], target)
        return self.bce_dice(maps[0], target)


def make_loss(name: str, multiclass: bool, alpha: float = 1.0) -> nn.Module:
    return _Loss(name, multiclass, alpha)


def _optimizer(cfg: dict, params) -> torch.optim.Optimizer:
    if cfg["optimizer"] == "adamw":
        return torch.optim.AdamW(params, lr=cfg["lr"], weight_decay=cfg["weight_decay"])
    if cfg["optimizer"] == "adam":
        return torch.optim.Adam(params, lr=cfg["lr"], weight_decay=cfg["weight_decay"])
    return torch.optim.SGD(params, lr=cfg["lr"], momentum=cfg["momentum"], weight_decay=cfg["weight_decay"])


def lr_at(cfg: dict, epoch: int) -> float:
    """Step schedule: ``lr * gamma ** (number of lr_steps <= epoch)`` (epoch counted from 0)."""
    return cfg["lr"] * cfg["lr_gamma"] ** sum(epoch >= s for s in cfg["lr_steps"])


def _epoch_seed(seed: int, epoch: int, rank: int) -> int:
    return (seed * 1_000_003 + epoch * 7919 + rank * 104_729) % (2 ** 63)


def to_input(image: Tensor, device: torch.device) -> Tensor:
    """uint8 ``[N, C, H, W]`` -> float in [0, 1] on ``device``."""
    return image.to(device, non_blocking=True).float().div_(255.0)


def normalize(x: Tensor) -> Tensor:
    return (x - MEAN) / STD


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def _autocast(device: torch.device, enabled: bool):
    dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    return torch.autocast(device_type=device.type, dtype=dtype, enabled=enabled)


@torch.no_grad()
def validate(model: nn.Module, ds, indices, device, cfg, multiclass: bool, info: D.DistInfo, batch_size: int = 4):
    """Scores ``ds[indices]`` at the training size (this rank's shard), gathers all ranks' evaluators."""
    net = _unwrap(model)
    was_training = net.training
    net.eval()
    ev = MulticlassEvaluator(ds.num_classes, ds.class_names) if multiclass else BinaryEvaluator(cfg["threshold"])
    mine = [indices[i] for i in D.shard(len(indices), info)]
    for start in range(0, len(mine), batch_size):
        items = [ds[i] for i in mine[start:start + batch_size]]
        x = normalize(to_input(torch.stack([it["image"] for it in items]), device))
        with _autocast(device, cfg["amp"]):
            out = net(x)
        logits = (out[0] if isinstance(out, (list, tuple)) else out).float()
        for it, lg in zip(items, logits):
            lab, fov = it["label"].to(device), it["fov"].to(device)
            if multiclass:
                ev.add(lg.argmax(0), lab, fov, ds.ids[it["index"]])
            else:
                ev.add(torch.sigmoid(lg[0]), lab, fov, ds.ids[it["index"]])
    net.train(was_training)
    if info.enabled:
        def fresh():
            return (MulticlassEvaluator(ds.num_classes, ds.class_names) if multiclass
                    else BinaryEvaluator(cfg["threshold"]))
        merged = fresh()
        for st in D.all_gather_objects(_to_cpu(ev.state()), info):
            merged.merge(fresh().load_state(st))
        ev = merged
    return ev


def _to_cpu(obj):
    if isinstance(obj, Tensor):
        return obj.cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_to_cpu(v) for v in obj]
    return obj


# ------------------------------------------------------------------------------------------ the run


def _log(info: D.DistInfo, *msg) -> None:
    if info.is_main:
        print(*msg, flush=True)


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
    model = ckpt_io.create_model(cfg["model"], kwargs, source="--model-kwargs", shown=cfg["model_kwargs"])
    cfg["model_kwargs_resolved"] = kwargs
    check_input_size(cfg["size"], int(getattr(model, "input_divisor", 16)), cfg["model"])
    return model


def _payload(cfg, model, opt, scaler, epoch, best, bad_epochs, metrics) -> dict:
    return {
        "format": ckpt_io.FORMAT, "model": cfg["model"], "model_kwargs": cfg["model_kwargs_resolved"],
        "state_dict": _unwrap(model).state_dict(),
        "data": {"dataset": cfg["dataset"], "data_root": cfg["data_root"], "size": list(cfg["size"]),
                 "in_chans": cfg["in_chans"], "num_classes": cfg["num_classes"], "class_names": cfg["class_names"],
                 "observer": cfg["observer"], "seed": cfg["seed"], "mean": MEAN, "std": STD},
        "config": {k: v for k, v in cfg.items() if k not in ("model_kwargs_resolved",)},
        "epoch": epoch, "best": best, "bad_epochs": bad_epochs,
        "optimizer": opt.state_dict(), "scaler": scaler.state_dict() if scaler is not None else None,
        "metrics": nan_to_none(metrics), "versions": versions(),
    }


def _read_jsonl(path: Path, upto_epoch: int) -> list[dict]:
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


def train(cfg: dict, *, resume: Optional[str] = None, overwrite: bool = False) -> dict:
    """Runs training (and the final evaluation) for a config from :func:`make_config`; returns a summary.

    ``resume``: a checkpoint to continue from. Its config is used; ``cfg`` then holds only ``out`` and
    the flags given on the command line among ``RESUMABLE_OVERRIDES`` (e.g. more ``epochs``).
    """
    state = None
    if resume:
        state = ckpt_io.load(resume, purpose="resume")
        saved = dict(state["config"])
        saved.update({k: v for k, v in cfg.items() if k in RESUMABLE_OVERRIDES or k == "out"})
        cfg = saved
        try:
            _check_config(cfg, multiclass=(cfg.get("num_classes") or 1) > 1)
        except KeyError as e:
            raise ckpt_io.CheckpointError(f"checkpoint {str(resume)!r} is damaged or incomplete: its 'config' has "
                                          f"no {e.args[0]!r} entry") from None
    info = D.setup(cfg["device"])
    try:
        return _train(cfg, info, resume, state, overwrite)
    finally:
        D.cleanup(info)


def _train(cfg: dict, info: D.DistInfo, resume: Optional[str], state: Optional[dict], overwrite: bool) -> dict:
    device = info.device
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg["threads"]))
    if cfg["deterministic"]:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    torch.manual_seed(cfg["seed"])
    out = _check_out(cfg, bool(resume), overwrite, info)

    # Everything that can fail on bad input runs before --out is created: data, model, memory, images.
    train_ds, train_idx, val_ds, val_idx = _datasets(cfg, info)
    multiclass = train_ds.num_classes > 1
    model = _build_model(cfg)
    check_training_memory(model, cfg, device, len(train_idx) + len(val_idx),
                          processes_per_host=int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    # Load (and cache) every image now: a bad file fails before training starts, on every rank alike.
    t_load = time.perf_counter()
    for i in train_idx:
        train_ds[i]
    for i in val_idx:
        val_ds[i]
    _log(info, f"loaded    {len(train_idx) + len(val_idx)} images in {time.perf_counter() - t_load:.1f} s")
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
    opt = _optimizer(cfg, _unwrap(model).parameters())
    scaler = torch.amp.GradScaler("cuda") if (cfg["amp"] and device.type == "cuda") else None
    augment = Augment.from_dict(cfg["augment"]) if cfg["augment"] else None

    start_epoch, best, bad_epochs = 0, {"epoch": None, "value": None, "monitor": cfg["monitor"]}, 0
    if state is not None:
        ckpt_io.load_state(_unwrap(model), state["state_dict"], resume, "--resume checkpoint")
        opt.load_state_dict(state["optimizer"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        start_epoch, best, bad_epochs = int(state["epoch"]), dict(state["best"]), int(state["bad_epochs"])
    records = _read_jsonl(out / "metrics.jsonl", start_epoch) if info.is_main else []
    if info.is_main:
        with open(out / "metrics.jsonl", "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in records)
        (out / "config.json").write_text(json.dumps(nan_to_none({**cfg, "command": command_line()}), indent=2) + "\n")

    n_params = sum(p.numel() for p in _unwrap(model).parameters())
    _log(info, f"model     {cfg['model']} ({n_params:,} parameters) {cfg['model_kwargs_resolved']}")
    _log(info, f"data      {train_ds.describe()}; training on {len(train_idx)}, "
               f"validation: {cfg['val_resolved']} ({len(val_idx)} images)")
    _log(info, f"recipe    {cfg['optimizer']} lr {cfg['lr']:g} wd {cfg['weight_decay']:g}, loss {cfg['loss']}, batch "
               f"{cfg['batch_size']}{' x ' + str(info.world_size) + ' ranks' if info.enabled else ''}, epochs "
               f"{cfg['epochs']}, patience {cfg['patience'] or 'off'}, monitor {cfg['monitor']}, augment {augment}")
    _log(info, f"device    {device}{' (DDP, ' + str(info.world_size) + ' processes)' if info.enabled else ''}"
               f"{', AMP' if cfg['amp'] else ''}; outputs in {out}")
    if resume:
        _log(info, f"resuming  from {resume} after epoch {start_epoch}"
                   + (f" (nothing left to train: --epochs is {cfg['epochs']})" if start_epoch >= cfg["epochs"] else ""))

    sampler = torch.utils.data.distributed.DistributedSampler(
        torch.utils.data.Subset(train_ds, train_idx), num_replicas=info.world_size, rank=info.rank, shuffle=True,
        seed=cfg["seed"], drop_last=False)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.Subset(train_ds, train_idx), batch_size=cfg["batch_size"], sampler=sampler,
        num_workers=cfg["workers"], persistent_workers=cfg["workers"] > 0, pin_memory=device.type == "cuda",
        drop_last=False)

    done = start_epoch
    stopped_early = bool(cfg["patience"]) and bad_epochs >= cfg["patience"]
    if stopped_early:
        _log(info, f"the run had stopped early (no {cfg['monitor']} improvement in {bad_epochs} validations); "
                   "pass a larger --patience to train on")
    for epoch in range(start_epoch, cfg["epochs"] if not stopped_early else start_epoch):
        sampler.set_epoch(epoch)
        seed = _epoch_seed(cfg["seed"], epoch, info.rank)
        torch.manual_seed(seed)
        gen = torch.Generator(device=device).manual_seed(seed)
        lr = lr_at(cfg, epoch)
        for group in opt.param_groups:
            group["lr"] = lr
        model.train()
        t0 = time.perf_counter()
        total, seen = torch.zeros((), dtype=torch.float64, device=device), 0
        bar = None
        if info.is_main and cfg["progress"]:
            from tqdm import tqdm
            bar = tqdm(total=len(loader), desc=f"epoch {epoch + 1}/{cfg['epochs']}", unit="batch", leave=False,
                       dynamic_ncols=True, file=sys.stderr)
        for batch in loader:
            x = to_input(batch["image"], device)
            y = batch["label"].to(device, non_blocking=True)
            fov = batch["fov"].to(device, non_blocking=True)
            if augment is not None:
                x, y, fov = augment(x, y, fov, gen)
            with _autocast(device, cfg["amp"]):
                out_maps = model(normalize(x))
                loss = loss_fn(out_maps, y)
            opt.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
            else:
                loss.backward()
                opt.step()
            total += loss.detach().double() * x.shape[0]       # no host sync per step
            seen += x.shape[0]
            if bar is not None:
                if bar.n % 10 == 0 or bar.n + 1 == bar.total:
                    el = time.perf_counter() - t0
                    bar.set_postfix(loss=f"{total.item() / seen:.4f}", img_s=f"{seen * info.world_size / el:.2f}",
                                    refresh=False)
                bar.update(1)
        if bar is not None:
            bar.close()
        sums = D.all_reduce_sum([total.item(), float(seen)], info)
        train_loss = sums[0] / max(sums[1], 1.0)
        # Checked after the reduction (and on weights identical on every rank): every rank stops together, and
        # no checkpoint of a diverged model is written.
        nonfinite = None if not math.isfinite(train_loss) else ckpt_io.first_nonfinite(_unwrap(model).state_dict())
        if not math.isfinite(train_loss) or nonfinite:
            what = f"the training loss became {train_loss}" if nonfinite is None else \
                f"the weights became non-finite ({nonfinite})"
            kept = f"last finite epoch saved in {out / 'last.pt'}" if epoch > 0 else "nothing was saved"
            raise UserError(f"{what} in epoch {epoch + 1} ({kept}); lower --lr or turn off --amp")
        t_train = time.perf_counter() - t0
        speed = sums[1] / t_train

        val = None
        if val_ds is not None and ((epoch + 1) % cfg["val_every"] == 0 or epoch + 1 == cfg["epochs"]):
            val = validate(model, val_ds, val_idx, device, cfg, multiclass, info, batch_size=max(1, cfg["batch_size"]))
            val = val.summary()
        improved = False
        if val is None and val_ds is None:
            improved = True                        # no validation: best = last
        elif val is not None:
            v, cur = val[cfg["monitor"]], best["value"]
            if cur is None or (math.isnan(cur) and not math.isnan(v)) or v > cur:
                best = {"epoch": epoch + 1, "value": v, "monitor": cfg["monitor"]}
                improved, bad_epochs = True, 0
            else:
                bad_epochs += 1
        if val_ds is None:
            best = {"epoch": epoch + 1, "value": None, "monitor": None}
        rec = {"epoch": epoch + 1, "lr": lr, "train_loss": train_loss, "time_s": round(time.perf_counter() - t0, 3),
               "images_per_s": round(speed, 3), "val": nan_to_none(val), "best": improved}
        if info.is_main:
            payload = _payload(cfg, model, opt, scaler, epoch + 1, best, bad_epochs, rec)
            ckpt_io.save(out / "last.pt", payload)
            if improved:
                shutil.copyfile(out / "last.pt", out / "best.tmp")
                os.replace(out / "best.tmp", out / "best.pt")
            records.append(rec)
            with open(out / "metrics.jsonl", "a") as f:
                f.write(json.dumps(rec) + "\n")
            try:
                from train.plots import plot_curves
                plot_curves(records, out / "curves.png", cfg["monitor"])
            except Exception as e:  # a plot must never stop training
                print(f"note: could not draw curves.png ({e})", file=sys.stderr)
            vs = "" if val is None else "  val " + " ".join(
                f"{k} {val[k]:.4f}" for k in (BINARY_METRICS if not multiclass else ("mdice", "miou", "acc"))
                if k in val and val[k] is not None and not math.isnan(val[k]))
            print(f"epoch {epoch + 1:>3}/{cfg['epochs']}  lr {lr:.2e}  loss {train_loss:.4f}  {speed:.2f} img/s"
                  f"{vs}{'  *best' if improved and val is not None else ''}", flush=True)
        done = epoch + 1
        D.barrier(info)
        if cfg["patience"] and val is not None and bad_epochs >= cfg["patience"]:
            _log(info, f"early stopping: no {cfg['monitor']} improvement in {bad_epochs} validations "
                       f"(best {best['value']:.4f} at epoch {best['epoch']})")
            stopped_early = True
            break

    summary = {"out": str(out), "epochs_done": done,
               "best": best, "stopped_early": stopped_early, "eval": None}
    if cfg["evaluate"] and info.is_main:
        from train.evaluate import evaluate_checkpoint

        ckpt_path = out / "best.pt" if (out / "best.pt").exists() else out / "last.pt"
        _log(info, f"evaluating {ckpt_path.name} on the test split ...")
        res = evaluate_checkpoint(ckpt_path, split="test", out=out / "eval", device=str(device),
                                  progress=cfg["progress"], limit=cfg["limit"])
        summary["eval"] = str(out / "eval")
        _log(info, res["table"].split("\n## ")[0].rstrip())
    if info.is_main:
        print(f"\noutputs: {out}/", flush=True)
        for name, what in (("metrics.jsonl", "per-epoch metrics"), ("curves.png", "training curves"),
                           ("best.pt", "best checkpoint"), ("last.pt", "last checkpoint (resume with --resume)"),
                           ("eval/metrics.md", "test metrics table"), ("eval/metrics.json", "test metrics"),
                           ("eval/overlays/", "prediction overlays")):
            if (out / name).exists():
                print(f"  {str(out / name):<48} {what}")
    return summary
