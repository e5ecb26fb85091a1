"""torch.fx support: the functional ops are FX leaves, as torchvision's are.

Symbolic tracing (``torch.fx.symbolic_trace``, torchvision's ``create_feature_extractor`` and
``get_graph_node_names``) passes ``torch.fx.Proxy`` objects instead of tensors. A wrapper that sees
one records itself as a single ``call_function`` node instead of running its checks on the proxy;
the checks run when the traced graph runs. Unlike ``torch.fx.wrap``, this works however the
function is reached (``hybridops.deform_conv2d``, ``from hybridops import ...``, or a module).
"""
from __future__ import annotations

from typing import Any, Callable, Optional

import torch.fx


def fx_leaf(fn: Callable, *args: Any) -> Optional[torch.fx.Proxy]:
    """When any of ``args`` (positional, nested lists included) is an FX proxy: a node calling
    ``fn(*args)``, returned as a proxy. Otherwise None (not tracing: run normally)."""
    proxy = next(_iter_proxies(args), None)
    if proxy is None:
        return None
    return proxy.tracer.create_proxy("call_function", fn, args, {})


def _iter_proxies(values: Any):
    for v in values:
        if isinstance(v, torch.fx.Proxy):
            yield v
        elif isinstance(v, (list, tuple)):
            yield from _iter_proxies(v)
