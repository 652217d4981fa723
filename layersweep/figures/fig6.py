"""Fig. 6: fig5's AD and IC panels for maps rescaled to sum r * H * W."""
from __future__ import annotations

import logging
import math

import pandas as pd

from .inputs import RESCALED_METRICS, add_layer_info, check_r, select_summary, specs_by_index
from .panels import metric_figure
from .reference import REFERENCE_R, select_reference, with_reference_column
from .style import write_outputs

log = logging.getLogger(__name__)


def fig6(summary, r, out_pdf, out_png, out_csv, *, reference=None, demo, dpi, specs=None,
         methods=None) -> pd.DataFrame:
    """fig5's AD and IC panels for maps rescaled to sum r * H * W.

    The reference's rescaled values (computed with r = 0.3) are overlaid only when r is 0.3.
    """
    r = check_r(r)
    spec_map = specs_by_index(specs)
    rows = add_layer_info(select_summary(summary, RESCALED_METRICS, r, spec_map, methods), spec_map)
    ref = None
    if reference is not None:
        if math.isclose(r, REFERENCE_R):
            ref = select_reference(reference, True, rows, spec_map)
        else:
            log.info("reference values were rescaled with r = %g, not %g; not overlaid on fig6.", REFERENCE_R, r)
    fig = metric_figure(rows, RESCALED_METRICS, ref, spec_map,
                        f"Fig. 6: AD and IC after rescaling each map to sum r\u00b7H\u00b7W, r = {r:g}",
                        demo, (1, 2), (15.0, 5.6))
    cols = ["method", "layer", "name", "kind", "metric", "rescale_r", "mean", "ci_low", "ci_high", "n",
            "n_constant", "n_clamped"]
    table = rows[cols].sort_values(["metric", "method", "layer"]).reset_index(drop=True)
    return write_outputs(fig, with_reference_column(table, ref), out_pdf, out_png, out_csv, dpi)

