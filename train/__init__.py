"""Training, evaluation and prediction for the hybridops segmentation models.

    python -m train [...]              train (python -m train --help); no arguments: a short synthetic run
    python -m train.evaluate [...]     metrics, tables, probability maps and overlays of a checkpoint
    python -m train.predict [...]      probability maps and masks for any image files

Modules: ``data`` (datasets by name), ``augment`` (batched on-device augmentation), ``metrics``,
``config`` (a run's settings), ``step`` (loss, optimiser, one epoch of steps, validation), ``loop`` (the
epochs of a run), ``report`` (console lines, metrics.jsonl, curves), ``checkpoint`` (the training
entries on top of ``models.checkpoint``), ``recipes`` (each model's paper recipe), ``distributed`` (DDP),
``evaluate``, ``predict``, ``plots`` (training curves with Pillow). User errors, the ``--size`` check and
the provenance of every result (versions, git sha, command line) come from the shared ``cli`` package.
"""
