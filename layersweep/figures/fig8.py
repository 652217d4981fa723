"""Fig. 8: every metric of config metrics.compute but core (fig5 draws it) against the layer, plain maps."""
from __future__ import annotations

import math

import pandas as pd

from ..errors import LayersweepError
from ..metrics.registry import get_metric
from .inputs import add_layer_info, select_summary, specs_by_index
from .panels import metric_figure
from .style import write_outputs


def fig8_columns(metrics) -> list[str]:
    """The drawn columns of `metrics`, in config order; reference values (a chance level) stay in the CSV."""
    return [c for name in metrics for c, direction in get_metric(name).columns.items() if direction != "none"]


def fig8(summary, out_pdf, out_png, out_csv, *, metrics, demo, dpi, specs=None, methods=None) -> pd.DataFrame:
    """One panel per column of `metrics` (registry names, core excepted) against layer, as fig5 draws core's
    four; small multiples by method family with many methods. A reference column (direction "none", e.g. the
    pointing game's chance level) is a dashed line at its mean in its metric's first panel. CSV: the plotted
    summary rows, reference columns included."""
    if not metrics:
        raise LayersweepError("fig8 draws the metrics other than core, but 'metrics.compute' lists none.")
    columns = fig8_columns(metrics)
    spec_map = specs_by_index(specs)
    # metric by metric: `metrics.options.<m>.methods` may score some methods only
    rows = add_layer_info(pd.concat([select_summary(summary[summary["metric"].isin(list(get_metric(name).columns))],
                                                    list(get_metric(name).columns), None, spec_map, None)
                                     for name in metrics], ignore_index=True), spec_map)
    if methods is not None:
        rows = rows[rows["method"].isin(list(methods))]
    drawn = rows[rows["metric"].isin(columns)]
    hlines = {}
    for name in metrics:  # a reference column ("none": the pointing game's chance) is drawn in its metric's panel
        cols = get_metric(name).columns
        drawn_cols = [c for c, d in cols.items() if d != "none"]
        for c in (c for c, d in cols.items() if d == "none" and drawn_cols):
            level = rows.loc[rows["metric"] == c, "mean"].mean()
            hlines[drawn_cols[0]] = (level, f"{c.replace('_', ' ')}: {level:.3g} (mean)")
    ncols = min(3, len(columns))
    nrows = math.ceil(len(columns) / ncols)
    fig = metric_figure(drawn, columns, None, spec_map, "Fig. 8: the faithfulness metrics of each layer",
                        demo, (nrows, ncols), (max(11.0, 5.2 * ncols + 3.0), 3.6 * nrows + 1.2), hlines=hlines)
    cols = ["method", "layer", "name", "kind", "metric", "mean", "ci_low", "ci_high", "n", "n_constant"]
    table = rows[cols].sort_values(["metric", "method", "layer"]).reset_index(drop=True)
    return write_outputs(fig, table, out_pdf, out_png, out_csv, dpi)
