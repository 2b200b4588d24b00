"""Table 1 as the paper lays it out: Markdown (``table1.md``) and LaTeX (``table1.tex``)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pandas as pd

from ...analysis.comparison import BOLD_CHANGE, bold
from ...analysis.runfolder import COMPARE, TABLE1
from ...engine.ablation import ALL, TABLE1_CELLS
from ...engine.parts import PART_NAMES
from ...engine.scheme import ENCODER, PartScheme

__all__ = ["ALL", "TABLE1_CELLS", "table1_latex", "table1_markdown"]



def _cell_label(x: str, y: str) -> str:
    return f"{x}<-{y}"


_COLUMNS = list(PART_NAMES) + [ALL]
#: What a cell a causal mask makes impossible reads (it is never computed as a no-op).
IMPOSSIBLE = "impossible"


def _rows(frame: pd.DataFrame, scheme: PartScheme) -> list[str]:
    """The table's rows: the scheme's targets that the run has a row for (an encoder-decoder's DEC)."""
    present = set(frame[TABLE1.target].astype(str))
    return [x for x in scheme.targets() if x in PART_NAMES or x in present]


def _grid(frame: pd.DataFrame, fmt: Callable[[float, str, bool], str], scheme: PartScheme = ENCODER) -> list[list[str]]:
    cells = frame.set_index(TABLE1.ablation)
    out = []
    for x in _rows(frame, scheme):
        row = []
        for y in _COLUMNS:
            if not scheme.possible(x, y):
                row.append(IMPOSSIBLE)
                continue
            r = cells.loc[_cell_label(x, y)]
            mark = r[COMPARE.mark] if COMPARE.mark in r and isinstance(r[COMPARE.mark], str) else ""
            row.append(fmt(float(r[COMPARE.ndcg]), mark, bold(float(r[COMPARE.delta]), mark)))
        out.append(row)
    return out


def _caption(frame: pd.DataFrame, config, note: str = "", scheme: PartScheme = ENCODER) -> tuple[float, float, str]:
    from ...analysis.significance import marks_legend

    base = float(frame.loc[frame[TABLE1.ablation] == TABLE1.none, COMPARE.ndcg].iloc[0])
    rnd = float(frame.loc[frame[TABLE1.ablation] == TABLE1.random, COMPARE.ndcg].iloc[0])
    n = int(frame[COMPARE.n_queries].max()) if COMPARE.n_queries in frame else None
    cap = "all judged passages" if config.per_grade is None else f"up to {config.per_grade} passage{'' if config.per_grade == 1 else 's'} per grade"
    if config.run:
        cap = f"re-ranking the top {config.top_k or 'all'} of run {Path(config.run).name}"
    text = (f"Tie-aware nDCG@10 (expected value over the orders of tied passages) with attention direction X<-Y "
            f"masked in all layers and heads; model {config.model}, {', '.join(config.datasets)}, {cap}, seed "
            f"{config.seed}. Original: {base:.3f}; random ranking (exact): {rnd:.3f}. Bold: lower than the original by at least "
            f"{BOLD_CHANGE:g} or significantly; "
            f"{marks_legend(config.alpha, config.correction, f'the {len(frame) - 2} ablations', n)}.")
    if not scheme.encoder:
        text += (f" Parts {', '.join(scheme.names)} (score read at {scheme.aggregator_name})"
                 + (f"; {IMPOSSIBLE}: the causal mask lets no token of X read Y (Y comes after X)" if scheme.causal else "")
                 + ("; DEC: the decoder token reading the encoder by cross-attention" if scheme.decoder else "") + ".")
    return base, rnd, (f"{text} {note}" if note else text)


def table1_markdown(frame: pd.DataFrame, config, note: str = "", scheme: PartScheme = ENCODER) -> str:
    """Table 1 as the paper lays it out: rows X, columns Y and All (``note``: the pool's protocol), in the
    model's part names (``scheme``)."""
    _, _, caption = _caption(frame, config, note, scheme)

    def fmt(v, mark, low):
        s = f"{v:.3f}" + mark.replace("*", "\\*")
        return f"**{s}**" if low else s

    lines = ["| X \\ Y | " + " | ".join("All" if y == ALL else scheme.name(y) for y in _COLUMNS) + " |",
             "|---|" + "---|" * len(_COLUMNS)]
    for x, row in zip(_rows(frame, scheme), _grid(frame, fmt, scheme)):
        lines.append(f"| **{scheme.name(x)}** | " + " | ".join(row) + " |")
    return caption.replace("*", "\\*") + "\n\n" + "\n".join(lines) + "\n"


def table1_latex(frame: pd.DataFrame, config, note: str = "", scheme: PartScheme = ENCODER) -> str:
    from ...analysis.significance import RISE_MARK

    _, _, caption = _caption(frame, config, note, scheme)

    def fmt(v, mark, low):
        s = f"{v:.3f}" + {"*": "$^*$", RISE_MARK: "$^{\\uparrow}$"}.get(mark, "")
        return f"\\textbf{{{s}}}" if low else s

    head = " & ".join(["$X \\backslash Y$"] + ["All" if y == ALL else scheme.name(y) for y in _COLUMNS]) + " \\\\"
    body = "\n".join(f"{scheme.name(x)} & " + " & ".join(r.replace(IMPOSSIBLE, "--") for r in row) + " \\\\"
                     for x, row in zip(_rows(frame, scheme), _grid(frame, fmt, scheme)))
    caption_tex = (caption.replace("<-", "$\\leftarrow$").replace("_", "\\_").replace(RISE_MARK, "$\\uparrow$")
                   .replace("<=", "$\\leq$"))
    return ("\\begin{table}[t]\n\\centering\n\\begin{tabular}{l" + "c" * len(_COLUMNS) + "}\n\\toprule\n" + head +
            "\n\\midrule\n" + body + "\n\\bottomrule\n\\end{tabular}\n\\caption{" + caption_tex +
            "}\n\\end{table}\n")
