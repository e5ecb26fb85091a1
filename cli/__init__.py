"""What every command of the repository shares, below all of them (``models.export``, ``train``,
``benchmarks``): it imports none of the project's packages but ``hybridops`` (for its version), so each
command may use it without one reaching into another. Not installed: like ``models``, ``train`` and
``benchmarks`` it runs from the checkout (only ``hybridops`` is a package of the wheel).

Modules:
    errors       user errors (bad paths, files, options, checkpoints): one ``error: ...`` line, exit 2
    args         checks of arguments several commands take (``--size H W``)
    provenance   where a result came from: versions, git sha, command line, UTC time
"""
