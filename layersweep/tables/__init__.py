"""The papers' tables beside ours: specs (config/tables.yaml) and the papers' numbers (config/paper-numbers.csv),
checked against the studies (`spec`); the coefficient cosine similarity of LIFT-CAM Table 2 (`cosine`); one
table per target (`paper`); its markdown / HTML rendering for report.html (`render`)."""
from .cosine import coefficient_cosine, cosine_per_image, cosine_summary
from .paper import TABLE_COLUMNS, paper_table
from .render import table_html, table_markdown
from .spec import load_paper_numbers, load_table_specs, paper_number

__all__ = ["coefficient_cosine", "cosine_per_image", "cosine_summary", "paper_table", "TABLE_COLUMNS",
           "table_html", "table_markdown", "load_paper_numbers", "load_table_specs", "paper_number"]
