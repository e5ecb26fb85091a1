"""Training, evaluation and prediction for the hybridops segmentation models.

    python -m train [...]              train (python -m train --help); no arguments: a short synthetic run
    python -m train.evaluate [...]     metrics, tables, probability maps and overlays of a checkpoint
    python -m train.predict [...]      probability maps and masks for any image files

Modules: ``data`` (datasets by name), ``augment`` (batched on-device augmentation), ``metrics``,
``loop`` (the training loop), ``checkpoint``, ``recipes`` (each model's paper recipe), ``distributed``
(DDP), ``evaluate``, ``predict``, ``plots`` (training curves with Pillow), ``errors`` (user errors).
"""
