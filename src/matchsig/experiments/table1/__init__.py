"""Table 1: nDCG@10 with each part-to-part direction ablated in every layer and head (the paper's Table 1).

``experiment`` (the plug-in and its report section), ``findings`` (its claims), ``tables`` (its layouts).
"""

from .experiment import Table1, cell_label
from .tables import ALL, TABLE1_CELLS, table1_latex, table1_markdown

__all__ = ["ALL", "TABLE1_CELLS", "Table1", "cell_label", "table1_latex", "table1_markdown"]
