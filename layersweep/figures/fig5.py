"""Fig. 5: AD, IC, insertion AUC and deletion AUC of plain maps against the layer."""
from __future__ import annotations

import pandas as pd

from .inputs import FIG5_METRICS, add_layer_info, select_summary, specs_by_index
from .panels import metric_figure
from .reference import select_reference, with_reference_column
from .style import write_outputs


def fig5(summary, out_pdf, out_png, out_csv, *, reference=None, demo, dpi, specs=None,
         methods=None) -> pd.DataFrame:
    """AD, IC, insertion AUC, deletion AUC against layer (plain maps only).

    `reference` is load_reference()'s table (or None); its plain values are drawn as hollow markers.
    `methods` (figures.methods): the methods drawn, None = every method in the summary; with more than
    panels.FEW_METHODS of them the panels become small multiples by method family.
    CSV: the summary's numbers plus a `reference` column (NaN where nothing is overlaid).
    """
    spec_map = specs_by_index(specs)
    rows = add_layer_info(select_summary(summary, FIG5_METRICS, None, spec_map, methods), spec_map)
    ref = select_reference(reference, False, rows, spec_map)
    fig = metric_figure(rows, FIG5_METRICS, ref, spec_map, "Fig. 5: metrics of the maps of each layer",
                        demo, (2, 2), (15.0, 9.5))
    cols = ["method", "layer", "name", "kind", "metric", "mean", "ci_low", "ci_high", "n", "n_constant"]
    table = rows[cols].sort_values(["metric", "method", "layer"]).reset_index(drop=True)
    return write_outputs(fig, with_reference_column(table, ref), out_pdf, out_png, out_csv, dpi)


