"""The report's figures, one module per figure (or table), each written as PDF + PNG + the CSV of exactly
the numbers it plots.

Every figure function validates its input first (a LayersweepError names what is missing, and nothing is
written), then draws on a pyplot-free `Figure` with the Agg canvas (no global state, safe in Snakemake jobs),
then writes its files atomically (`style.write_outputs`) and returns the DataFrame that went into the CSV.

Shared pieces: `style` (labels, markers, colours of every method, the demo stamp, file writing), `inputs`
(checked selection of the summary tables), `reference` (the report's own numbers), `panels` (the
metric-against-layer panels of fig5/fig6: small multiples by method family when many).
"""
from .atlas import atlas
from .fig2 import fig2
from .fig3 import fig3
from .fig4 import fig4
from .fig5 import fig5
from .fig6 import fig6
from .fig7 import fig7
from .fig8 import fig8, fig8_columns
from .inputs import FIG5_METRICS, RESCALED_METRICS, vgg11_specs
from .reference import REFERENCE_R, SHAPCAM_VOC, load_reference
from .style import DEMO_STAMP, METHOD_LABELS, METRICS, method_label

__all__ = ["atlas", "fig2", "fig3", "fig4", "fig5", "fig6", "fig7", "fig8", "fig8_columns", "load_reference", "method_label", "vgg11_specs",
           "DEMO_STAMP", "METHOD_LABELS", "METRICS", "FIG5_METRICS", "RESCALED_METRICS", "REFERENCE_R",
           "SHAPCAM_VOC"]
