"""The training step and what one epoch runs: the loss and optimiser factories, the learning-rate
schedule, the per-epoch seeds, input normalisation, one pass over the training data
(:func:`train_epoch`) and the validation pass (:func:`validate`)."""
from __future__ import annotations

import time
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from train import distributed as D
from train.data.crops import native_item
from train.infer import forward_whole
from train.schedule import lr_at
from train.metrics import BinaryEvaluator, MulticlassEvaluator

__all__ = ["MEAN", "STD", "make_loss", "make_optimizer", "lr_at", "epoch_seed", "to_input", "normalize", "unwrap",
           "autocast", "train_epoch", "validate"]

MEAN, STD = 0.5, 0.5          # input normalisation: (x - 0.5) / 0.5 maps [0, 1] to [-1, 1]


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


def make_optimizer(cfg: dict, params) -> torch.optim.Optimizer:
    if cfg["optimizer"] == "adamw":
        return torch.optim.AdamW(params, lr=cfg["lr"], weight_decay=cfg["weight_decay"])
    if cfg["optimizer"] == "adam":
        return torch.optim.Adam(params, lr=cfg["lr"], weight_decay=cfg["weight_decay"])
    return torch.optim.SGD(params, lr=cfg["lr"], momentum=cfg["momentum"], weight_decay=cfg["weight_decay"])


def epoch_seed(seed: int, epoch: int, rank: int) -> int:
    return (seed * 1_000_003 + epoch * 7919 + rank * 104_729) % (2 ** 63)


def to_input(image: Tensor, device: torch.device) -> Tensor:
    """uint8 ``[N, C, H, W]`` -> float in [0, 1] on ``device``."""
    return image.to(device, non_blocking=True).float().div_(255.0)


def normalize(x: Tensor) -> Tensor:
    return (x - MEAN) / STD


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def autocast(device: torch.device, enabled: bool):
    dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    return torch.autocast(device_type=device.type, dtype=dtype, enabled=enabled)


def train_epoch(model: nn.Module, loader, loss_fn: nn.Module, opt: torch.optim.Optimizer, device: torch.device, *,
                amp: bool = False, scaler: Optional[torch.amp.GradScaler] = None, augment=None,
                gen: Optional[torch.Generator] = None, bar=None, world_size: int = 1,
                lr_fn: Optional[Callable[[int], float]] = None, stop_at: Optional[float] = None) -> tuple[Tensor, int]:
    """One pass over ``loader`` (batches of uint8 ``image [N, C, H, W]``, ``label`` and ``fov [N, H, W]``):
    augment, forward, loss, backward, optimiser step. Returns (the sum of the batch losses times the
    batch sizes as a float64 tensor on ``device``, the number of images seen); no host sync per step
    unless ``bar`` (a tqdm bar) shows the running loss every 10 batches.

    ``lr_fn(b)``: the learning rate of batch ``b`` (a per-step schedule); ``stop_at``: a
    ``time.perf_counter()`` deadline checked before each batch after the first (the pass ends early once
    it is past)."""
    t0 = time.perf_counter()
    total, seen = torch.zeros((), dtype=torch.float64, device=device), 0
    for b, batch in enumerate(loader):
        if stop_at is not None and b > 0 and time.perf_counter() >= stop_at:     # at least one step
            break
        if lr_fn is not None:
            for group in opt.param_groups:
                group["lr"] = lr_fn(b)
        x = to_input(batch["image"], device)
        y = batch["label"].to(device, non_blocking=True)
        fov = batch["fov"].to(device, non_blocking=True)
        if augment is not None:
            x, y, fov = augment(x, y, fov, gen)
        with autocast(device, amp):
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
                bar.set_postfix(loss=f"{total.item() / seen:.4f}", img_s=f"{seen * world_size / el:.2f}",
                                refresh=False)
            bar.update(1)
    return total, seen


@torch.no_grad()
def validate(model: nn.Module, ds, indices, device, cfg, multiclass: bool, info: D.DistInfo, batch_size: int = 4):
    """Scores ``ds[indices]`` at the training size, or with crop training (``cfg["crop"]``) on the whole
    native image (this rank's shard); gathers all ranks' evaluators."""
    net = unwrap(model)
    was_training = net.training
    net.eval()
    ev = MulticlassEvaluator(ds.num_classes, ds.class_names) if multiclass else BinaryEvaluator(cfg["threshold"])
    mine = [indices[i] for i in D.shard(len(indices), info)]
    native = cfg.get("crop") is not None           # crop training: score the whole native image
    batch_size = 1 if native else batch_size
    for start in range(0, len(mine), batch_size):
        items = [native_item(ds, i) if native else ds[i] for i in mine[start:start + batch_size]]
        images = torch.stack([it["image"] for it in items])
        with autocast(device, cfg["amp"]):
            logits = forward_whole(net, images, int(getattr(net, "input_divisor", 16)),
                                   lambda t: normalize(to_input(t, device))).float()
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

