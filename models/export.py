"""Export a model to ONNX and check it in ONNX Runtime.

    python -m models.export --model hybridnetseg [--checkpoint CKPT] --out model.onnx
                            [--size H W] [--in-chans C] [--static] [--mixconv padded|per_group] [--no-check]

``--checkpoint`` takes a checkpoint written by ``python -m train`` (the model name and its settings
are read from it) or a plain state dict of the named model; without it the model keeps its random
initialisation (useful for latency tests only). The exported graph takes ``image`` ``[N, C, H, W]``
and returns the eval-mode logits ``output``; batch and spatial size are dynamic unless
``--static``. Loading uses ``torch.load(..., weights_only=True)``; an unreadable, empty or malformed
checkpoint, one with NaN/inf weights, or one that does not fit the model is one ``error: ...`` line and
exit status 2 (``cli.errors``). The checkpoint is read by :mod:`models.checkpoint`, as ``python -m train``
reads it, so that this command needs nothing of ``train``.
"""
from __future__ import annotations

import argparse
import sys

import torch

import models
from cli.args import check_input_size
from cli.errors import UserError, run_cli
from models import checkpoint as ckpt_io


class ExportError(UserError):
    """A user error: printed as one ``error: ...`` line without a traceback, exit code 2."""


def load_model(name: str | None, checkpoint: str | None) -> tuple[str, torch.nn.Module]:
    """(model name, eval-mode model) from a training checkpoint, a plain state dict, or a name.

    The checkpoint's model entries are checked as ``python -m train`` checks them (entries and types,
    weights that fit the model and hold no NaN/inf); every problem is a :class:`cli.errors.UserError`.
    """
    kwargs: dict = {}
    state = None
    if checkpoint:
        ckpt = ckpt_io.read(checkpoint)
        if isinstance(ckpt, dict) and "state_dict" in ckpt and "model" in ckpt:
            ckpt_io.check_model_entries(ckpt, checkpoint)
            if name is not None and name != ckpt["model"]:
                raise ExportError(f"checkpoint {checkpoint!r} holds a {ckpt['model']!r} model, not {name!r}")
            name, kwargs, state = ckpt["model"], dict(ckpt.get("model_kwargs") or {}), ckpt["state_dict"]
        elif ckpt_io.is_state_dict(ckpt):
            state = ckpt
        else:
            raise ExportError(f"{checkpoint!r} is neither a training checkpoint nor a state dict")
    if name is None:
        raise ExportError("--model is required when the checkpoint does not name its model")
    source = f"the arguments stored in checkpoint {checkpoint!r}" if kwargs else ""
    model = ckpt_io.create_model(name, kwargs, error=ExportError, source=source)
    if state is not None:
        ckpt_io.load_state(model, state, checkpoint, "checkpoint")
    return name, model.eval()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m models.export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help=f"one of {', '.join(models.list_models())}")
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--out", required=True, help="output .onnx path")
    parser.add_argument("--size", nargs=2, type=int, default=(512, 512), metavar=("H", "W"),
                        help="example input size used for tracing and the check (default 512 512)")
    parser.add_argument("--in-chans", type=int, default=None, help="input channels (default: the model's)")
    parser.add_argument("--static", action="store_true", help="fixed batch and size instead of dynamic ones")
    parser.add_argument("--mixconv", choices=("padded", "per_group"), default=None)
    parser.add_argument("--no-check", action="store_true", help="skip the ONNX Runtime comparison")
    args = parser.parse_args(argv)

    def body() -> None:
        from hybridops.deploy import export_onnx

        name, model = load_model(args.model, args.checkpoint)
        check_input_size(list(args.size), int(getattr(model, "input_divisor", 1)), name)
        in_chans = args.in_chans or getattr(model, "in_chans", 3)
        example = torch.randn(1, in_chans, *args.size)
        try:
            with torch.no_grad():
                model(example)
        except ValueError as exc:
            raise ExportError(str(exc)) from None
        try:
            path = export_onnx(model, example, args.out, dynamic_batch=not args.static,
                               dynamic_size=not args.static, mixconv=args.mixconv, check=not args.no_check)
        except ImportError as exc:          # the optional onnx packages (the message says what to install)
            raise ExportError(str(exc)) from None
        print(f"wrote {path} ({name}, input [N, {in_chans}, H, W]"
              f"{'' if args.no_check else ', checked against PyTorch in ONNX Runtime'})")

    return run_cli(body)


if __name__ == "__main__":
    sys.exit(main())
