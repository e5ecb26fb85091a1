"""A run's settings: the model's recipe, the dataset's defaults and the command-line flags resolved into
one ``config`` dict (written to ``config.json`` and every checkpoint), and the checks that refuse a
setting that cannot work before anything is loaded or written."""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import torch

from cli.args import check_input_size
from cli.errors import UserError
from train.data import get_spec
from train.metrics import BINARY_METRICS
from train.recipes import LOSSES, OPTIMIZERS, RUN_DEFAULTS, SCHEDULES, default_in_chans, recipe_for

__all__ = ["make_config", "parse_model_kwargs", "check_config", "VAL_MODES", "RESUMABLE_OVERRIDES"]

VAL_MODES = ("auto", "holdout", "test", "none")

# Flags that may change when a run is resumed (the rest come from the checkpoint).
RESUMABLE_OVERRIDES = ("epochs", "patience", "device", "workers", "threads", "progress", "evaluate", "val_every", "amp",
                       "max_minutes")


def make_config(args: dict) -> dict:
    """The run's full settings from the command-line values (``None`` = not given).

    Precedence: flags > ``--recipe`` (:data:`train.recipes.RUN_RECIPES`) > dataset overrides (synthetic: a
    short run; not under ``--recipe``) > the model's recipe > defaults.
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
    r = recipe_for(model, spec.name, multiclass, args.get("recipe"))
    cfg = {
        "model": model, "model_kwargs": model_kwargs, "dataset": spec.name,
        "data_root": str(Path(args["data_root"]).resolve()) if args.get("data_root") else None,
        "size": list(args["size"]) if args.get("size") else list(spec.default_size),
        "in_chans": int(in_chans), "num_classes": args.get("num_classes"), "limit": args.get("limit"),
        "observer": args.get("observer") or 1, "seed": 0 if args.get("seed") is None else int(args["seed"]),
        "recipe": args.get("recipe"), "val": args.get("val") or r.get("val", "auto"), "val_fraction": 0.2 if args.get("val_fraction") is None else args["val_fraction"],
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
    _crop_settings(cfg, args, r)
    if not spec.needs_root and cfg["data_root"] is not None:
        cfg["data_root"] = None
    check_config(cfg, multiclass)
    return cfg


def _crop_settings(cfg: dict, args: dict, r: dict) -> None:
    """Crop training, the per-step schedule and ``--max-minutes`` (flags > recipe). With a crop, ``size``
    (the training input) is the crop; validation and evaluation then run on the whole native image."""
    for key in RUN_DEFAULTS:
        cfg[key] = args[key] if args.get(key) is not None else r[key]
    if cfg["crop"] is not None:
        cfg["crop"] = [int(v) for v in cfg["crop"]]
        if args.get("size") and list(args["size"]) != cfg["crop"]:
            raise UserError(f"--size {' '.join(map(str, args['size']))} and --crop {' '.join(map(str, cfg['crop']))} "
                            "disagree: with --crop the model trains on crops of the native image (give only --crop)")
        cfg["size"] = list(cfg["crop"])


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


def check_config(cfg: dict, multiclass: bool) -> None:
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
    _check_run_settings(cfg, need)
    if multiclass:
        need(cfg["loss"] in ("ce", "sace"), f"--loss {cfg['loss']} is a binary loss; multi-class data needs ce or sace")
    else:
        need(cfg["loss"] not in ("ce", "sace"),
             f"--loss {cfg['loss']} is a multi-class loss; binary data needs mixed, bce_dice or bce "
             "(or pass --num-classes for multi-class folder data)")
    keys = set(BINARY_METRICS) if not multiclass else {"acc", "mdice", "miou"}
    need(cfg["monitor"] in keys or (multiclass and cfg["monitor"].startswith("dice_")),
         f"--monitor {cfg['monitor']!r} is not a validation metric here; use one of {', '.join(sorted(keys))}")


def _check_run_settings(cfg: dict, need) -> None:
    """The crop, schedule and time-limit settings (absent in checkpoints from before them: defaults)."""
    s = {**RUN_DEFAULTS, **{k: cfg[k] for k in RUN_DEFAULTS if k in cfg}}
    if s["crop"] is not None:
        check_input_size(list(s["crop"]), what="--crop")
    need(isinstance(s["crops_per_image"], int) and s["crops_per_image"] >= 1,
         f"--crops-per-image must be >= 1, got {s['crops_per_image']}")
    need(s["crops_per_image"] == 1 or s["crop"] is not None,
         f"--crops-per-image {s['crops_per_image']} needs --crop H W (crops of the native image)")
    need(s["schedule"] in SCHEDULES, f"--schedule must be one of {', '.join(SCHEDULES)}, got {s['schedule']!r}")
    need(s["warmup_steps"] >= 0, f"--warmup-steps must be >= 0, got {s['warmup_steps']}")
    need(math.isfinite(s["min_lr"]) and 0 <= s["min_lr"] <= cfg["lr"],
         f"--min-lr must be in [0, --lr {cfg['lr']:g}], got {s['min_lr']}")
    need(s["max_minutes"] is None or (math.isfinite(s["max_minutes"]) and s["max_minutes"] > 0),
         f"--max-minutes must be > 0, got {s['max_minutes']}")
