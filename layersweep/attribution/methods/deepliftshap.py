"""DeepLiftShap (captum semantics): (a_l(x) - a_l(b)) * multiplier, summed over channels.

The engine averages over baselines, which gives captum's
`LayerDeepLiftShap(model, layer).attribute(x, baselines, target).sum(dim=1)`.
"""
from ..registry import register


@register("deepliftshap", "deeplift", "captum.attr.LayerDeepLiftShap, summed over channels")
def deepliftshap(delta, multiplier):
    return (delta * multiplier).sum(dim=2)
