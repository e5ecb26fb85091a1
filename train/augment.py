"""Training-time augmentation of a whole batch on its device (image, label and FOV transformed together).

Flips are exact index flips chosen per image; one random affine per image (scale, shift, rotation)
is applied with a single :func:`torch.nn.functional.grid_sample` call for the images (bilinear) and
one for labels + FOV (nearest, so class ids stay class ids); colour jitter (brightness, contrast, saturation, gamma) is a
few element-wise ops per batch. All randomness comes from a ``torch.Generator`` on the batch's
device, so a run is reproducible from its seed and nothing waits on the host.

Example:
    >>> aug = Augment(hflip=0.5, vflip=0.5, rotate=30, scale=(0.9, 1.1), shift=0.05, brightness=0.2)
    >>> g = torch.Generator().manual_seed(0)
    >>> image, label, fov = aug(image, label, fov, g)   # [N,C,H,W] float in [0,1], [N,H,W], [N,H,W] bool
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["Augment"]


@dataclass
class Augment:
    """Augmentation settings; ``0`` (or ``(1, 1)`` for ``scale``) switches a transform off.

    Args:
        hflip, vflip: probability of a horizontal / vertical flip.
        rotate: maximum rotation in degrees (uniform in ``[-rotate, rotate]``).
        scale: ``(lo, hi)`` zoom factor range (uniform; > 1 zooms in).
        shift: maximum translation as a fraction of the image size, per axis.
        brightness: multiply by a factor uniform in ``[1 - b, 1 + b]``.
        contrast: scale the deviation from each image's mean grey level by ``[1 - c, 1 + c]``.
        saturation: scale the deviation from the pixel's grey level by ``[1 - s, 1 + s]`` (RGB only).
        gamma: raise to a power ``exp(u)``, ``u`` uniform in ``[-gamma, gamma]``.
        p_geometric: probability that an image gets the random affine at all (flips are separate).
    """
    hflip: float = 0.0
    vflip: float = 0.0
    rotate: float = 0.0
    scale: tuple[float, float] = (1.0, 1.0)
    shift: float = 0.0
    brightness: float = 0.0
    contrast: float = 0.0
    saturation: float = 0.0
    gamma: float = 0.0
    p_geometric: float = 1.0

    def __post_init__(self) -> None:
        self.scale = (float(self.scale[0]), float(self.scale[1]))
        for name in ("hflip", "vflip", "p_geometric"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"Augment: {name} is a probability in [0, 1], got {v}")
        if not 0 < self.scale[0] <= self.scale[1]:
            raise ValueError(f"Augment: scale must be (lo, hi) with 0 < lo <= hi, got {self.scale}")
        for name in ("rotate", "shift", "brightness", "contrast", "saturation", "gamma"):
            if getattr(self, name) < 0:
                raise ValueError(f"Augment: {name} must be >= 0, got {getattr(self, name)}")

    @classmethod
    def from_dict(cls, d: Optional[dict]) -> "Augment":
        return cls(**(d or {}))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["scale"] = list(self.scale)
        return d

    @property
    def geometric(self) -> bool:
        return (self.hflip > 0 or self.vflip > 0 or self.rotate > 0 or self.shift > 0
                or self.scale != (1.0, 1.0))

    @property
    def photometric(self) -> bool:
        return self.brightness > 0 or self.contrast > 0 or self.saturation > 0 or self.gamma > 0

    def _u(self, n: int, lo: float, hi: float, g: torch.Generator, device) -> Tensor:
        return torch.rand(n, generator=g, device=device) * (hi - lo) + lo

    @property
    def affine_on(self) -> bool:
        return self.rotate > 0 or self.shift > 0 or self.scale != (1.0, 1.0)

    def affine(self, n: int, h: int, w: int, g: torch.Generator, device) -> Tensor:
        """``[n, 2, 3]`` matrices for :func:`F.affine_grid` (output -> input, normalised coordinates)."""
        ang = self._u(n, -self.rotate, self.rotate, g, device) * (math.pi / 180.0)
        s = self._u(n, self.scale[0], self.scale[1], g, device)
        tx = self._u(n, -self.shift, self.shift, g, device) * 2.0
        ty = self._u(n, -self.shift, self.shift, g, device) * 2.0
        keep = torch.rand(n, generator=g, device=device) < self.p_geometric
        ang, s = torch.where(keep, ang, 0.0), torch.where(keep, s, 1.0)
        tx, ty = torch.where(keep, tx, 0.0), torch.where(keep, ty, 0.0)
        # Rotation in pixel space written in normalised coordinates (x_n = x / (W/2)), so non-square
        # images rotate without shearing; zoom by s means sampling the input at 1/s.
        c, si = torch.cos(ang) / s, torch.sin(ang) / s
        theta = torch.zeros(n, 2, 3, device=device)
        theta[:, 0, 0] = c
        theta[:, 0, 1] = -si * (h / w)
        theta[:, 1, 0] = si * (w / h)
        theta[:, 1, 1] = c
        theta[:, 0, 2] = tx
        theta[:, 1, 2] = ty
        return theta

    @staticmethod
    def _flip(x: Tensor, which: Tensor, dim: int) -> Tensor:
        return torch.where(which.view(-1, *([1] * (x.dim() - 1))), x.flip(dim), x)

    def __call__(self, image: Tensor, label: Tensor, fov: Optional[Tensor], g: torch.Generator):
        """``image`` float ``[N, C, H, W]`` in [0, 1]; ``label`` ``[N, H, W]`` (any dtype); ``fov`` bool
        ``[N, H, W]`` or None. Returns the three, same shapes and dtypes (pixels moved in from outside
        the image are 0 in all three). Flips are exact index flips; rotation, scale and shift one
        resampling (bilinear for the image, nearest for label and FOV)."""
        n, c, h, w = image.shape
        if n == 0:
            return image, label, fov
        dev = image.device
        for p, dim in ((self.hflip, -1), (self.vflip, -2)):
            if p > 0:
                which = torch.rand(n, generator=g, device=dev) < p
                image, label = self._flip(image, which, dim), self._flip(label, which, dim)
                fov = self._flip(fov, which, dim) if fov is not None else None
        if self.affine_on:
            theta = self.affine(n, h, w, g, dev)
            grid = F.affine_grid(theta, [n, c, h, w], align_corners=False)
            image = F.grid_sample(image, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
            extra = [label.to(image.dtype)[:, None]]
            if fov is not None:
                extra.append(fov.to(image.dtype)[:, None])
            moved = F.grid_sample(torch.cat(extra, 1), grid, mode="nearest", padding_mode="zeros",
                                  align_corners=False)
            label = moved[:, 0].round().to(label.dtype)
            if fov is not None:
                fov = moved[:, 1] > 0.5
        if self.photometric:
            image = self.jitter(image, g)
        return image, label, fov

    def jitter(self, image: Tensor, g: torch.Generator) -> Tensor:
        n, c = image.shape[:2]
        dev = image.device

        def grey(x: Tensor) -> Tensor:
            if c != 3:
                return x.mean(1, keepdim=True)
            wts = torch.tensor([0.299, 0.587, 0.114], device=dev, dtype=x.dtype).view(1, 3, 1, 1)
            return (x * wts).sum(1, keepdim=True)

        if self.brightness > 0:
            image = image * self._u(n, 1 - self.brightness, 1 + self.brightness, g, dev).view(n, 1, 1, 1)
        if self.contrast > 0:
            m = grey(image).mean((2, 3), keepdim=True)
            image = (image - m) * self._u(n, 1 - self.contrast, 1 + self.contrast, g, dev).view(n, 1, 1, 1) + m
        if self.saturation > 0 and c == 3:
            gr = grey(image)
            image = (image - gr) * self._u(n, 1 - self.saturation, 1 + self.saturation, g, dev).view(n, 1, 1, 1) + gr
        image = image.clamp(0.0, 1.0)
        if self.gamma > 0:
            image = image.pow(torch.exp(self._u(n, -self.gamma, self.gamma, g, dev)).view(n, 1, 1, 1))
        return image

    def __repr__(self) -> str:
        on = {k: v for k, v in self.to_dict().items()
              if v != getattr(Augment, k, None) and not (k == "scale" and tuple(v) == (1.0, 1.0))}
        return "Augment(" + ", ".join(f"{k}={v}" for k, v in on.items()) + ")"


def _time_step(model_name: str, n: int, h: int, w: int, dev: torch.device, reps: int) -> float:
    """Median seconds of one training step (forward, the recipe's loss, backward, optimiser step)."""
    import statistics
    import time

    import models
    from train.recipes import recipe_for
    from train.step import make_loss

    r = recipe_for(model_name, "drive", False)
    model = models.create_model(model_name).to(dev).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss_fn = make_loss(r["loss"], False)
    x = torch.randn(n, 3, h, w, device=dev)
    y = (torch.rand(n, h, w, device=dev) > 0.9).to(torch.uint8)
    times = []
    for i in range(reps + 1):
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        t = time.perf_counter()
        loss = loss_fn(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        if i >= 1:
            times.append(time.perf_counter() - t)
    return statistics.median(times)


def benchmark(sizes=((2, 512, 512), (1, 960, 960)), device: str = "cpu", reps: int = 10, recipe: str = "hybridnetseg",
              threads: Optional[int] = None, step_reps: int = 0) -> list[dict]:
    """Times :class:`Augment` (the recipe's settings) on random uint8-valued batches: ms per batch and
    images per second (median of ``reps`` after a warm-up), image + label + FOV together. The default
    batch sizes are the recipe's (DRIVE 2 at 512x512, CHASE_DB1 1 at 960x960). ``step_reps > 0`` also
    times a training step of the recipe's model on the same batch, for the ratio."""
    import statistics
    import time

    from train.recipes import RECIPES

    if threads:
        torch.set_num_threads(threads)
    dev = torch.device(device)
    aug = Augment.from_dict(RECIPES[recipe]["augment"])
    g = torch.Generator(device=dev).manual_seed(0)
    rows = []
    for n, h, w in sizes:
        image = torch.randint(0, 256, (n, 3, h, w), device=dev).float() / 255
        label = (torch.rand(n, h, w, device=dev) > 0.9).to(torch.uint8)
        fov = torch.ones(n, h, w, dtype=torch.bool, device=dev)
        times = []
        for i in range(reps + 2):
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            t = time.perf_counter()
            aug(image, label, fov, g)
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            if i >= 2:
                times.append(time.perf_counter() - t)
        med = statistics.median(times)
        rows.append({"batch": n, "height": h, "width": w, "ms_per_batch": round(med * 1e3, 2),
                     "images_per_s": round(n / med, 2), "p20_ms": round(sorted(times)[len(times) // 5] * 1e3, 2),
                     "p80_ms": round(sorted(times)[(4 * len(times)) // 5 - 1] * 1e3, 2)})
        if step_reps > 0:
            step = _time_step(recipe, n, h, w, dev, step_reps)
            rows[-1].update({"train_step_ms": round(step * 1e3, 1),
                             "augment_share_of_step": round(med / (med + step), 4)})
    return rows


def _main(argv=None) -> int:
    import argparse
    import json
    import platform

    p = argparse.ArgumentParser(prog="python -m train.augment",
                                description="Augmentation throughput (image + label + FOV, a recipe's settings).")
    p.add_argument("--device", default="cpu")
    p.add_argument("--reps", type=int, default=10)
    p.add_argument("--recipe", default="hybridnetseg", help="whose augmentation settings (hybridnetseg, msffnet)")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--step-reps", type=int, default=0, help="also time N training steps of the recipe's model")
    p.add_argument("--json", help="also write the rows (with device, versions, date) to this file")
    args = p.parse_args(argv)
    rows = benchmark(device=args.device, reps=args.reps, recipe=args.recipe, threads=args.threads,
                     step_reps=args.step_reps)
    dev = torch.device(args.device)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"{platform.processor() or 'cpu'} " \
        f"({torch.get_num_threads()} torch threads, {__import__('os').cpu_count()} cores visible)"
    print(f"augmentation ({args.recipe} recipe) on {name}")
    print(f"{'batch':>5} {'H x W':>11} {'ms/batch':>9} {'img/s':>8} {'step ms':>9} {'aug share':>9}")
    for r in rows:
        extra = (f" {r['train_step_ms']:>9.1f} {100 * r['augment_share_of_step']:>8.2f}%" if "train_step_ms" in r
                 else "")
        print(f"{r['batch']:>5} {r['height']:>5} x {r['width']:<5} {r['ms_per_batch']:>9.2f} {r['images_per_s']:>8.2f}"
              + extra)
    if args.json:
        from cli.provenance import git_sha, utc_timestamp, versions
        rec = {"benchmark": "train.augment", "recipe": args.recipe, "augment": Augment.from_dict(
            __import__("train.recipes", fromlist=["RECIPES"]).RECIPES[args.recipe]["augment"]).to_dict(),
               "device": name, "versions": versions(), "git_sha": git_sha(),
               "date": utc_timestamp(), "reps": args.reps,
               "rows": rows}
        with open(args.json, "w") as f:
            json.dump(rec, f, indent=2)
            f.write("\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
