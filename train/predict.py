"""Predict: ``python -m train.predict --checkpoint CKPT INPUT... --out DIR``.

``INPUT`` is any number of image files or folders (their image files, not recursive). For each image
``NAME`` the model runs at its training size (stored in the checkpoint; ``--size`` overrides) -- a model
trained on crops of the native image (``--crop``) runs on the whole image instead, zero-padded to its
multiple, so its ``_full`` files equal the others -- and writes to ``--out``:

* binary models: ``NAME_prob.png`` (probability x 255) and ``NAME_mask.png`` (0/255 at ``--threshold``)
  at the input size, and ``NAME_prob_full.png`` / ``NAME_mask_full.png`` resized back to the image's
  original size (probabilities resized bilinearly, then thresholded);
* multi-class models: ``NAME_labels.png`` (class ids as grey values 0..C-1) and ``NAME_color.png``
  (class colours), at the input size and as ``_full`` at the original size.

``--fov`` also zeroes the prediction outside a field of view derived from each image (fundus photos).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from cli.args import check_input_size
from cli.errors import UserError
from train.data.base import IMAGE_EXTS, derive_fov, read_image, resize_image, resize_mask
from train.distributed import resolve_device
from train.evaluate import _save_png, class_palette, infer, load_for_inference, run_inference_cli
from train.infer import pad_to_multiple

__all__ = ["predict", "main", "collect_inputs"]


def collect_inputs(inputs: Sequence[str]) -> list[Path]:
    files: list[Path] = []
    for s in inputs:
        p = Path(s)
        if p.is_dir():
            found = sorted(q for q in p.iterdir() if q.is_file() and q.suffix.lower() in IMAGE_EXTS)
            if not found:
                raise UserError(f"folder {s!r} holds no image files ({', '.join(IMAGE_EXTS)})")
            files += found
        elif p.is_file():
            files.append(p)
        else:
            raise UserError(f"input {s!r} does not exist")
    stems = {}
    for f in files:
        if f.stem in stems and stems[f.stem] != f:
            raise UserError(f"two inputs share the name {f.stem!r} ({stems[f.stem]} and {f}); their outputs would "
                            "overwrite each other")
        stems[f.stem] = f
    return files


def predict(checkpoint, inputs: Sequence[str], out, *, size: Optional[Sequence[int]] = None, device: str = "auto",
            threshold: float = 0.5, expect_model: Optional[str] = None, fov: bool = False, amp: bool = False,
            progress: bool = True) -> list[Path]:
    """Writes the prediction PNGs of every input; returns the written paths."""
    dev = resolve_device(device)
    files = collect_inputs(inputs)
    model, ckpt = load_for_inference(checkpoint, dev, expect_model)
    data = ckpt["data"]
    native = size is None and bool(data.get("native"))     # crop-trained: the whole native image
    divisor = int(getattr(model, "input_divisor", 16))
    size = check_input_size(list(size) if size is not None else data["size"], divisor, ckpt["model"],
                            what="--size" if size is not None else f"the size stored in {str(checkpoint)!r}")
    images = [read_image(f, data["in_chans"]) for f in files]       # fail on an unreadable file before any work
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    palette = class_palette(max(int(data["num_classes"]), 2))
    written: list[Path] = []
    it = zip(files, images)
    if progress:
        from tqdm import tqdm
        it = tqdm(list(it), desc="predict", unit="img", leave=False, file=sys.stderr)
    for f, img in it:
        h, w = img.shape[:2]
        if native:
            x, _ = pad_to_multiple(torch.from_numpy(img).permute(2, 0, 1)[None], divisor)
            prob = full = infer(model, x, ckpt, dev, amp)[..., :h, :w]
        else:
            prob = infer(model, resize_image(img, size)[None], ckpt, dev, amp)
            full = F.interpolate(prob, size=(h, w), mode="bilinear", align_corners=False) if (h, w) != size else prob
        if fov:
            mask = torch.from_numpy(derive_fov(img)).to(dev)
            full = full * mask
            prob = full if native else prob * resize_mask(mask.cpu().numpy(), size).to(dev)
        outs = {}
        for tag, p in (("", prob[0]), ("_full", full[0])):
            if p.shape[0] == 1:
                pn = p[0].cpu().numpy()
                outs[f"_prob{tag}"] = np.round(pn * 255).astype(np.uint8)
                outs[f"_mask{tag}"] = ((pn >= threshold) * 255).astype(np.uint8)
            else:
                lab = p.argmax(0).cpu().numpy().astype(np.uint8)
                outs[f"_labels{tag}"] = lab
                outs[f"_color{tag}"] = palette[lab]
        for suffix, arr in outs.items():
            path = out / f"{f.stem}{suffix}.png"
            _save_png(arr, path)
            written.append(path)
    return written


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m train.predict", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or folders")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--size", nargs=2, type=int, metavar=("H", "W"), help="input size (default: the training size)")
    p.add_argument("--threshold", type=float, default=0.5)
    p.add_argument("--device", default="auto")
    p.add_argument("--model", help="fail unless the checkpoint holds this model")
    p.add_argument("--fov", action="store_true", help="zero the prediction outside a FOV derived from the image")
    p.add_argument("--amp", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    return p


def _cli(args: argparse.Namespace) -> None:
    written = predict(args.checkpoint, args.inputs, args.out, size=args.size, device=args.device,
                      threshold=args.threshold, expect_model=args.model, fov=args.fov, amp=args.amp,
                      progress=not args.no_progress)
    print(f"wrote {len(written)} files to {args.out}/")


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run_inference_cli(build_parser(), argv, _cli)


if __name__ == "__main__":
    sys.exit(main())
