"""RefineCAM (Domeniconi, Stramiglio, Lombardi & Salti, "How to Evaluate and Refine your CAM", ICPR 2026;
pytorch_grad_cam.RefineCAM in 1.5.7) over any registered base method, with the alternative mixers.

Options: `base` (default gradcampp: any registered method that is not itself a mix) and `mixer` (default
product = RefineCAM; geometric, logexp, expmean, identity: see `refine.py`). The base maps come from the base
method's own pass over all the requested layers at once (the engine's `_mixed_methods` hook); the map stored at
layer l mixes the base maps of every requested layer at depth >= l (the model input, -1, is the shallowest), so
with layers [5, 10, 15, 20] the map at features.5 is the product of the maps at 20, 15, 10 and 5. Maps are at
the input size, in [0, 1].

pytorch-grad-cam's RefineCAM calls one base CAM per layer, each a forward and backward of its own, and resizes
with cv2 (bilinear, pixel centres aligned: torch's align_corners=False), normalising with max + 1e-7 in
float32; tests/test_refinecam.py checks the maps against it.
"""
from .. import work
from ..refine import MIXERS, mix_prefixes
from ..registry import Option, available_methods, choice_option, get_method, register


def _is_base(name) -> bool:
    return isinstance(name, str) and name in available_methods() and get_method(name).pass_kind != "mix"


def _layer_cost(facts, options):
    """The base method's work at the layer (its pass is the base's: see work.pass_work's default)."""
    base = get_method(options["base"])
    return work.method_layer_cost(base)(facts, {**base.options, **options})


@register("refinecam", "mix", "pytorch_grad_cam.RefineCAM (and liuktc/RefineCAM's mixers)", cost=_layer_cost,
          options={"base": Option("gradcampp", _is_base, "the name of a registered method that is not itself a mix "
                                  "(e.g. 'gradcampp', 'layercam', 'gradcam', 'scorecam')"),
                   "mixer": choice_option("product", MIXERS)})
def refinecam(ordered, *, size, mixer="product", base=None):
    return mix_prefixes(ordered, size, mixer)
