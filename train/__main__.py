"""Train a segmentation model: ``python -m train [--model M] [--dataset D --data-root PATH] [--out DIR] ...``.

With no arguments: HybridNetSeg on the built-in synthetic fundus images (16 train / 4 val / 4 test at
64x64, 30 epochs at lr 3e-3, one CPU thread: about a minute on a CPU), then the evaluation of the best
checkpoint; the output folder is printed at the end.

Each model trains by its own paper's recipe (``train/recipes.py``) unless flags override it. Under
``torchrun --nproc_per_node=K`` the same command trains with DistributedDataParallel.

Examples::

    python -m train
    python -m train --model hybridnetseg --dataset chase_db1 --data-root data/CHASE_DB1 --out runs/chase
    python -m train --model hybridnetseg --dataset chase_db1 --data-root data/CHASE_DB1 --init-from runs/drive/best.pt
    python -m train --model msffnet --dataset folder --data-root my_mri --num-classes 8 --size 512 512
    python -m train --recipe chase_db1_cpu --dataset chase_db1 --data-root data/CHASE_DB1 --out runs/chase-cpu
    python -m train --out runs/chase --resume                 # continue an interrupted run
    torchrun --nproc_per_node=2 -m train --dataset drive --data-root data/DRIVE --out runs/drive-ddp
"""
from __future__ import annotations

import argparse
import datetime as _dt
import sys
from pathlib import Path
from typing import Optional, Sequence

from cli.errors import UserError, run_cli

_RESUMABLE = ("epochs", "patience", "device", "workers", "threads", "val_every", "amp", "max_minutes")


def build_parser() -> argparse.ArgumentParser:
    from train.data import DATASETS
    from cli.args import MAX_SIDE
    from train.config import VAL_MODES
    from train.recipes import LOSSES, OPTIMIZERS, RUN_RECIPES, SCHEDULES

    p = argparse.ArgumentParser(prog="python -m train", description=__doc__.split("\n\n")[0],
                                epilog="\n\n".join(__doc__.split("\n\n")[1:]),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("model and data")
    g.add_argument("--model", help="model name (default hybridnetseg; see models.list_models())")
    g.add_argument("--model-kwargs", metavar="JSON",
                   help='extra constructor arguments as a JSON object, e.g. \'{"widths": [16, 32, 64]}\' '
                   '(in_chans and num_classes come from the data)')
    g.add_argument("--dataset", help="one of: " + ", ".join(f"{k} ({v.summary})" for k, v in DATASETS.items())
                   + " (default synthetic)")
    g.add_argument("--data-root", help="the dataset's folder")
    g.add_argument("--size", nargs=2, type=int, metavar=("H", "W"),
                   help=f"input size (default: the dataset's paper size); H and W in 1..{MAX_SIDE}, divisible by "
                   "the model's divisor (16 for hybridnetseg and the default unet, 32 for msffnet); a run whose "
                   "batch cannot fit in the device's memory is refused")
    g.add_argument("--in-chans", type=int, choices=(1, 3), help="read images as grey (1) or RGB (3); default: the model's")
    g.add_argument("--num-classes", type=int, help="folder data: 1 = binary, C > 1 = classes 0..C-1 (default: inferred)")
    g.add_argument("--observer", type=int, choices=(1, 2), help="CHASE_DB1 labels: 1st (default) or 2nd observer")
    g.add_argument("--limit", type=int, help="use the first N images of each split (quick runs; synthetic: N images)")
    g = p.add_argument_group("recipe overrides (default: the model's paper recipe)")
    g.add_argument("--recipe", help="a named run recipe on top of the model's (flags still win): " + ", ".join(RUN_RECIPES)
                   + " (paper: the paper's protocol; chase_db1_cpu: native-resolution crops within a CPU budget)")
    g.add_argument("--crop", nargs=2, type=int, metavar=("H", "W"),
                   help="train on random H x W crops of the native image (centres inside the FOV; no resizing); "
                   "validation and evaluation then run on the whole native image")
    g.add_argument("--crops-per-image", type=int, metavar="N", help="crops of each training image per epoch (with --crop)")
    g.add_argument("--schedule", choices=SCHEDULES, help="step (--lr-steps, per epoch) or cosine (per step, after "
                   "--warmup-steps of linear warm-up, down to --min-lr at the last step)")
    g.add_argument("--warmup-steps", type=int, metavar="N", help="cosine schedule: linear warm-up steps")
    g.add_argument("--min-lr", type=float, help="cosine schedule: the final learning rate")
    g.add_argument("--epochs", type=int)
    g.add_argument("--batch-size", type=int, help="per process")
    g.add_argument("--loss", choices=LOSSES, help="mixed (HybridNetSeg deep supervision), bce_dice, bce, ce, "
                   "sace (size-adaptive CE)")
    g.add_argument("--alpha", type=float, help="size-adaptive CE exponent")
    g.add_argument("--optimizer", choices=OPTIMIZERS)
    g.add_argument("--lr", type=float)
    g.add_argument("--weight-decay", type=float)
    g.add_argument("--momentum", type=float, help="SGD momentum")
    g.add_argument("--lr-steps", type=int, nargs="*", metavar="EPOCH", help="multiply the lr by --lr-gamma at these epochs")
    g.add_argument("--lr-gamma", type=float)
    g.add_argument("--patience", type=int, metavar="N",
                   help="early stopping after N >= 1 validations without improvement; 0: off (N < 0 is an error)")
    g.add_argument("--monitor", help="validation metric for best.pt and early stopping (dice, auc, ...; mdice)")
    g.add_argument("--no-augment", action="store_true", help="train without augmentation")
    g = p.add_argument_group("validation")
    g.add_argument("--val", choices=VAL_MODES, help="auto (default: the dataset's val split, else holdout), holdout "
                   "(--val-fraction of train), test (the test split, as some papers do), none (best = last)")
    g.add_argument("--val-fraction", type=float, help="holdout fraction (default 0.2, at least one image)")
    g.add_argument("--val-every", type=int, metavar="N", help="validate every N >= 1 epochs (default 1; the last "
                   "epoch is always validated)")
    g = p.add_argument_group("run")
    g.add_argument("--out", help="output folder (default runs/<model>-<dataset>-<date>)")
    g.add_argument("--device", help="auto (default), cpu, cuda, cuda:N")
    g.add_argument("--amp", action="store_true", help="mixed precision (fp16 + GradScaler on CUDA, bf16 on CPU)")
    g.add_argument("--seed", type=int, help="default 0")
    g.add_argument("--deterministic", action="store_true", help="also ask for deterministic kernels")
    g.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's choice; on a busy or small "
                   "CPU 1 can be faster)")
    g.add_argument("--workers", type=int, help="data-loader processes (default 0: images are cached in memory)")
    g.add_argument("--resume", nargs="?", const="auto", metavar="CKPT",
                   help="continue from CKPT, or from --out's last.pt when given without a value")
    g.add_argument("--init-from", metavar="CKPT", help="start from these weights (e.g. DRIVE weights for CHASE_DB1/HRF)")
    g.add_argument("--overwrite", action="store_true", help="start over in an --out that holds a run")
    g.add_argument("--no-eval", action="store_true", help="skip the evaluation of best.pt on the test split")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    g.add_argument("--max-minutes", type=float, metavar="M",
                   help="stop training cleanly after M minutes (last.pt/best.pt saved, the stop recorded in "
                   "config.json and metrics.jsonl), then evaluate as usual")
    return p


def run(argv: Optional[Sequence[str]] = None) -> dict:
    """Parses ``argv`` and trains; raises :class:`UserError` for bad input. Returns the run summary."""
    from train.config import make_config
    from train.loop import train

    args = build_parser().parse_args(argv)
    given = {k: v for k, v in vars(args).items() if v is not None and v is not False}
    if args.resume is not None:
        if args.resume == "auto":
            if not args.out:
                raise UserError("--resume without a checkpoint needs --out DIR (the run to continue)")
            resume = Path(args.out) / "last.pt"
            if not resume.exists():
                raise UserError(f"--resume: {str(resume)!r} does not exist (nothing to continue in --out {args.out})")
        else:
            resume = Path(args.resume)
        cfg = {k: given[k] for k in _RESUMABLE if k in given}
        if args.no_progress:
            cfg["progress"] = False
        if args.no_eval:
            cfg["evaluate"] = False
        cfg["out"] = args.out or str(resume.parent)
        ignored = sorted(set(given) - set(_RESUMABLE) - {"resume", "out", "no_progress", "no_eval"})
        if ignored:
            print(f"note: --resume continues with the checkpoint's settings; ignoring "
                  f"{', '.join('--' + k.replace('_', '-') for k in ignored)}", file=sys.stderr)
        return train(cfg, resume=str(resume))
    values = dict(given)
    values["progress"] = not args.no_progress
    values["evaluate"] = not args.no_eval
    cfg = make_config(values)
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    cfg["out"] = args.out or str(Path("runs") / f"{cfg['model']}-{cfg['dataset']}-{stamp}")
    return train(cfg, overwrite=args.overwrite)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """The CLI: 0 on success, 2 after one ``error: ...`` line for a user error, 130 when interrupted."""
    try:
        return run_cli(lambda: run(argv))
    except KeyboardInterrupt:
        print("\ninterrupted: finished epochs are saved in the run's last.pt; continue with "
              "python -m train --out DIR --resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
