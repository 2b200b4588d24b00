"""`matchsig view`: a self-contained HTML page to explore one query-document pair.

The page shows the pair's tokens coloured by part, a layer x head grid (a contrast run's heads
highlighted), the chosen head's Q<-D and D<-Q attention (shading, links on hover, a heatmap),
exact-match tokens, the pair's score under each of Table 1's direction ablations, and a run's circuit
(:mod:`matchsig.report.view_circuit`). All is inlined (scripts, styles, data): no server, no network.

What is sent to the page is only what it draws, so a 512-token pair stays small and fast:

* for every head, the top-``k`` links of each query token into the document (``Q<-D``) and of each
  document token into the query (``D<-Q``): indices (uint8 or uint16) and weights quantised to uint8
  against the head's largest weight (one float scale per head and direction);
* per head and token, the total mass the token puts on the other side (``p(Q_i <- D)``), uint8;
* per head, exact summary statistics of this pair computed from the full maps (SPEC §4): the mean
  over query tokens of the max attention to the document (M) both ways, and the exact-match mass;
* optionally, per head, the contrast run's tests (``contrast/heads.csv``) and the mean normalised
  effect of patching the head (``patching.csv`` of ``matchsig patch --site head``, through
  :func:`matchsig.analysis.head_overlap.patching_overlay`): a grid colouring, a mark on the heads of largest
  |effect| and a row of the chosen head's panel.

Binary arrays are little-endian and base64-encoded. ``k`` shrinks (never below 2) when the arrays
would exceed ``max_bytes``; the page says so.
"""

from __future__ import annotations

import base64
import csv
import html
import json
import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Sequence

import numpy as np

from ..analysis.runfolder import FILES
from ..engine.ablation import TABLE1_ABLATIONS
from ..engine.parts import Part
from ..errors import MatchsigError

DEFAULT_TOP_K = 8
#: Statistics of :data:`matchsig.engine.attention_stats.STATISTICS` the page draws (per head, both directions).
PAGE_STATS = ("max", "exact")
#: Budget for the binary arrays (before base64, which adds a third): keeps a 512-token page < 2 MB.
DEFAULT_MAX_BYTES = 1_400_000
CONTRAST_COLUMNS = ("layer", "head", "direction", "delta_relevant", "delta_hard", "p_relevant", "p_hard", "sign", "kind")


# ---------------------------------------------------------------------------------------------
# attention extraction
# ---------------------------------------------------------------------------------------------


@dataclass
class HeadLinks:
    """Top-k links of one direction for every head: arrays shaped (L, H, rows, k)."""

    index: np.ndarray  # int64, column index within the target part
    weight: np.ndarray  # float32, the attention probability
    mass: np.ndarray  # (L, H, rows) float32: total mass each row puts on the target part


@dataclass
class PairAttention:
    """Everything the page needs from the model's attention for one pair."""

    input_ids: list[int]
    part_ids: list[int]
    q_span: tuple[int, int]  # [start, end) token positions of the query
    d_span: tuple[int, int]
    qd: HeadLinks  # query tokens -> document tokens
    dq: HeadLinks  # document tokens -> query tokens
    stats: dict[str, np.ndarray] = field(default_factory=dict)  # name -> (L, H) float


def _span(part_ids: Sequence[int], part: Part) -> tuple[int, int]:
    pos = [i for i, p in enumerate(part_ids) if p == int(part)]
    if not pos:
        return (0, 0)
    if pos != list(range(pos[0], pos[-1] + 1)):  # pragma: no cover - label_parts makes parts contiguous
        raise MatchsigError(f"part {part.name} is not contiguous in the encoded pair")
    return (pos[0], pos[-1] + 1)


def extract_attention(ce, query: str, document: str, top_k: int = DEFAULT_TOP_K,
                      top_k_doc: int | None = None) -> PairAttention:
    """Run one forward of ``ce`` on the pair and reduce every layer's attention to top-k links.

    ``top_k``: links per query token (Q<-D); ``top_k_doc``: links per document token (D<-Q),
    default ``top_k``. Both are capped by the size of the target part. Statistics are exact (taken
    from the full maps inside the forward pass); no full map outlives its layer.
    """
    import torch

    from ..engine.attention_stats import DIRECTIONS, reduce_probs, statistic_names

    if top_k < 1:
        raise MatchsigError(f"top-k must be >= 1, got {top_k}")
    enc = ce.encode([query], [document])
    ids, parts = list(enc.input_ids[0]), list(enc.part_ids[0])
    qs, qe = _span(parts, Part.Q)
    ds, de = _span(parts, Part.D)
    nq, nd = qe - qs, de - ds
    if nd == 0:
        raise MatchsigError("the document has no tokens (empty, or cut away by max_length)")
    kq = min(top_k, nd)
    kd = min(top_k if top_k_doc is None else max(1, top_k_doc), nq)
    nl, nh = ce.num_layers, ce.num_heads
    qd_i = np.zeros((nl, nh, nq, kq), np.int64)
    qd_w = np.zeros((nl, nh, nq, kq), np.float32)
    dq_i = np.zeros((nl, nh, nd, kd), np.int64)
    dq_w = np.zeros((nl, nh, nd, kd), np.float32)
    qd_m = np.zeros((nl, nh, nq), np.float32)
    dq_m = np.zeros((nl, nh, nd), np.float32)
    # the page draws these statistics of the table (matchsig.engine.attention_stats), keyed "max_qd", ...
    shown = [(f"{s}_{d[0].lower()}{d[-1].lower()}", k, j) for k, (d, _, _) in enumerate(DIRECTIONS)
             for j, s in enumerate(statistic_names()) if s in PAGE_STATS]
    stats = {key: np.zeros((nl, nh), np.float64) for key, _, _ in shown}
    seen: set[int] = set()

    batch = ce.collate(enc, [0])

    def on_layer(probs: torch.Tensor, hook) -> None:
        p = probs[0].float()  # (H, T, T)
        for blk, k, out_i, out_w, out_m in ((p[:, qs:qe, ds:de], kq, qd_i, qd_w, qd_m),
                                            (p[:, ds:de, qs:qe], kd, dq_i, dq_w, dq_m)):
            val, idx = torch.topk(blk, k, dim=-1)
            out_i[hook.layer] = idx.cpu().numpy()
            out_w[hook.layer] = val.cpu().numpy()
            out_m[hook.layer] = blk.sum(-1).cpu().numpy()  # (H, rows)
        values = reduce_probs(probs, batch.part_ids, batch.input_ids)[0]  # (H, directions, statistics)
        for key, k, j in shown:
            stats[key][hook.layer] = values[:, k, j].double().cpu().numpy()
        seen.add(hook.layer)

    with torch.inference_mode():
        ce.forward(batch, hooks={f"blocks.{layer}.attn.hook_pattern": on_layer for layer in range(nl)}, kernel="eager")
    if len(seen) != nl:  # pragma: no cover - CrossEncoder checks routing at load time
        raise MatchsigError(f"model {ce.name}: attention maps of {nl - len(seen)} layers were not seen")
    return PairAttention(ids, parts, (qs, qe), (ds, de), HeadLinks(qd_i, qd_w, qd_m), HeadLinks(dq_i, dq_w, dq_m), stats)


def top_links_from_map(attn: np.ndarray, q_span: tuple[int, int], d_span: tuple[int, int], k: int,
                       direction: str = "Q<-D") -> tuple[np.ndarray, np.ndarray]:
    """Reference: top-k links of one head's full (T, T) map, ``direction`` ``Q<-D`` or ``D<-Q``.

    Returns (index, weight), each (rows, k), sorted by decreasing weight; indices relative to the
    target part. Used by the tests to check :func:`extract_attention` and the page's data.
    """
    (qs, qe), (ds, de) = q_span, d_span
    blk = attn[qs:qe, ds:de] if direction == "Q<-D" else attn[ds:de, qs:qe]
    k = min(k, blk.shape[1])
    order = np.argsort(-blk, axis=-1, kind="stable")[:, :k]
    return order, np.take_along_axis(blk, order, axis=-1)


# ---------------------------------------------------------------------------------------------
# packing
# ---------------------------------------------------------------------------------------------


def _b64(a: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(a).tobytes()).decode("ascii")


def _index_dtype(n_targets: int) -> np.dtype:
    return np.dtype(np.uint8) if n_targets <= 256 else np.dtype("<u2")


def quantise_links(weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(L, H, rows, k) weights -> uint8 codes and an (L, H) scale: ``weight ~= code / 255 * scale``."""
    scale = weight.reshape(weight.shape[0], weight.shape[1], -1).max(-1) if weight.size else np.zeros(weight.shape[:2])
    scale = np.where(scale > 0, scale, 1.0).astype(np.float64)
    codes = np.rint(weight / scale[:, :, None, None] * 255.0).clip(0, 255).astype(np.uint8)
    return codes, scale


def dequantise_links(codes: np.ndarray, scale: np.ndarray) -> np.ndarray:
    return codes.astype(np.float64) / 255.0 * scale[:, :, None, None]


def _pack_links(links: HeadLinks, n_targets: int) -> dict:
    codes, scale = quantise_links(links.weight)
    dt = _index_dtype(n_targets)
    return {
        "k": int(links.index.shape[-1]),
        "index_bytes": int(dt.itemsize),
        "index": _b64(links.index.astype(dt)),
        "weight": _b64(codes),
        "scale": [float(f"{s:.6g}") for s in scale.ravel()],
        "mass": _b64(np.rint(links.mass.clip(0, 1) * 255).astype(np.uint8)),
    }


def link_bytes(n_layers: int, n_heads: int, nq: int, nd: int, kq: int, kd: int) -> int:
    """Bytes of the binary link arrays for the given sizes (before base64)."""
    per_head = nq * kq * (_index_dtype(nd).itemsize + 1) + nd * kd * (_index_dtype(nq).itemsize + 1) + nq + nd
    return n_layers * n_heads * per_head


def choose_top_k(n_layers: int, n_heads: int, nq: int, nd: int, top_k: int, max_bytes: int) -> tuple[int, int]:
    """(k for Q<-D, k for D<-Q) fitting ``max_bytes``: D<-Q shrinks first (it has the most rows), to 2."""
    kq, kd = min(top_k, nd), min(top_k, nq)
    while link_bytes(n_layers, n_heads, nq, nd, kq, kd) > max_bytes and max(kq, kd) > 2:
        if kd >= kq and kd > 2:
            kd -= 1
        else:
            kq -= 1
    return max(1, kq), max(1, kd)


# ---------------------------------------------------------------------------------------------
# contrast runs
# ---------------------------------------------------------------------------------------------


def _number(text: str | None) -> float | None:
    try:
        v = float(text) if text not in (None, "") else None
    except ValueError:
        return None
    return v if v is not None and math.isfinite(v) else None


def _decision(row: dict, column: str) -> str | None:
    """The corrected p-value of a heads.csv row (``p_relevant_holm``...) when there is one, else the raw one."""
    for suffix in ("holm", "bonferroni"):
        if row.get(f"{column}_{suffix}") not in (None, ""):
            return row[f"{column}_{suffix}"]
    return row.get(column)


def read_contrast_heads(path: str | Path, num_layers: int | None = None, num_heads: int | None = None) -> list[dict]:
    """Rows of a contrast run's ``heads.csv`` as dicts (layer, head, direction, deltas, p-values, kind)."""
    path = Path(path)
    try:
        fh = open(path, newline="", encoding="utf-8")
    except OSError as exc:
        raise MatchsigError(f"cannot read contrast heads {path}: {exc.strerror}") from None
    with fh:
        reader = csv.DictReader(fh)
        cols = [c.strip().lower() for c in (reader.fieldnames or [])]
        missing = [c for c in ("layer", "head") if c not in cols]
        if missing:
            raise MatchsigError(f"contrast heads {path}: missing column(s) {', '.join(missing)} (has {', '.join(cols) or 'none'})")
        rows = []
        for n, raw in enumerate(reader, start=2):
            row = {(k or "").strip().lower(): (v or "").strip() for k, v in raw.items()}
            try:
                layer, head = int(row["layer"]), int(row["head"])
            except ValueError:
                raise MatchsigError(f"contrast heads {path}, line {n}: layer/head must be integers") from None
            if (num_layers is not None and not 0 <= layer < num_layers) or (num_heads is not None and not 0 <= head < num_heads):
                raise MatchsigError(
                    f"contrast heads {path}, line {n}: head {layer}/{head} does not exist in this model "
                    f"({num_layers} layers x {num_heads} heads): was the run made with another model?"
                )
            # kind and sign were set by matchsig.analysis.matching.classify when the run wrote heads.csv
            kind = (row.get("kind") or "none").lower() or "none"
            rows.append({
                "layer": layer, "head": head,
                "direction": (row.get("direction") or "").upper().replace(" ", ""),
                "delta_relevant": _number(row.get("delta_relevant")),
                "delta_hard": _number(row.get("delta_hard")),
                "p_relevant": _number(_decision(row, "p_relevant")),
                "p_hard": _number(_decision(row, "p_hard")),
                "sign": int(_number(row.get("sign")) or 0),
                "kind": kind,
            })
    return rows


@dataclass
class RunPair:
    model: str
    query: str
    document: str
    qid: str
    docid: str
    grade: str | None
    heads_csv: Path | None
    note: str | None
    patching_csv: Path | None = None
    circuit_json: Path | None = None


def load_run_pair(run_dir: str | Path, qid: str, docid: str) -> RunPair:
    """The model, pair text and contrast heads of a finished run folder."""
    run = Path(run_dir)
    if not run.is_dir():
        raise MatchsigError(f"run folder {run} does not exist")
    cfg_path = run / FILES.config
    model = None
    if cfg_path.is_file():
        try:
            cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise MatchsigError(f"cannot read {cfg_path}: {exc}") from None
        model = cfg.get("model") if isinstance(cfg, dict) else None
        if isinstance(model, str) and not Path(model).is_absolute() and (run / model).exists():
            model = str(run / model)
    pools = run / FILES.pools
    if not pools.is_file():
        raise MatchsigError(f"run folder {run} has no {FILES.pools}: cannot find the text of pair {qid}/{docid}")
    import pandas as pd

    try:  # written by pandas (tab-separated, quoted where needed): read it the same way
        frame = pd.read_csv(pools, sep="\t", dtype=str, keep_default_na=False)
    except (OSError, ValueError) as exc:
        raise MatchsigError(f"cannot read {pools}: {exc}") from None
    need = ["qid", "docid", "query", "document"]
    if not set(need) <= set(frame.columns):
        raise MatchsigError(f"{pools}: expected columns qid, docid, grade, query, document; has {', '.join(frame.columns)}")
    of_query = frame[frame["qid"] == str(qid)]
    hit = of_query[of_query["docid"] == str(docid)]
    if hit.empty:
        where = f"query {qid} has no passage {docid}" if len(of_query) else f"no query {qid}"
        raise MatchsigError(f"pair not in {pools}: {where}")
    found = hit.iloc[0].to_dict()
    heads = run / FILES.contrast_heads
    note = None if heads.is_file() else f"no contrast run in {run} ({FILES.contrast_heads} missing): no heads are highlighted"
    from ..experiments.circuit.experiment import CIRCUIT_JSON

    overlays = [p if p.is_file() else None for p in (run / FILES.patching, run / CIRCUIT_JSON)]
    return RunPair(model or "", found["query"], found["document"], str(qid), str(docid), found.get("grade"),
                   heads if heads.is_file() else None, note, *overlays)


def read_patching_heads(path: str | Path, num_layers: int, num_heads: int) -> list[dict]:
    """Per-head rows of a ``patching.csv`` for the page's overlay (:func:`matchsig.analysis.head_overlap.patching_overlay`:
    ``layer, head, diagnostic, effect_mean, effect_sd, n_pairs``); a one-line error when it is not a head
    table of a model with ``num_layers`` x ``num_heads`` heads."""
    from ..analysis.head_overlap import patching_overlay

    return patching_overlay(path, num_layers, num_heads)


# ---------------------------------------------------------------------------------------------
# page data and HTML
# ---------------------------------------------------------------------------------------------


def _finite(value, digits: int | None = None) -> float | None:
    """A JSON-safe number: None for NaN/inf (an overflowing fp16 model), rounded when asked."""
    v = float(value)
    if not math.isfinite(v):
        return None
    return round(v, digits) if digits is not None else v


def _display_tokens(ce, query: str, document: str, input_ids: list[int]) -> tuple[list[str], list[str], list[bool], bool]:
    """(raw tokens, display text from the original strings, whether a space precedes each token,
    whether the document was truncated)."""
    tok = ce.tokenizer
    raw = tok.convert_ids_to_tokens(input_ids)
    texts, space = list(raw), [False] * len(raw)
    try:
        enc = tok([query], [document], truncation="only_second", max_length=ce.max_length, return_offsets_mapping=True)
        if list(enc["input_ids"][0]) != list(input_ids):
            return raw, texts, [True] * len(raw), False
        seq = enc.sequence_ids(0)
        offs = enc["offset_mapping"][0]
    except Exception:  # a tokenizer without offsets: show its tokens as they are
        return raw, texts, [True] * len(raw), False
    prev_end: dict[int, int] = {}
    for i, (s, (a, b)) in enumerate(zip(seq, offs)):
        if s is None:
            space[i] = True
            continue
        src = query if s == 0 else document
        if b > a:
            texts[i] = src[a:b]
        space[i] = s not in prev_end or a > prev_end[s]
        prev_end[s] = max(b, prev_end.get(s, 0))
    truncated = bool(document[prev_end.get(1, 0):].strip())
    return raw, texts, space, truncated


def build_view_data(ce, query: str, document: str, *, top_k: int = DEFAULT_TOP_K, max_bytes: int = DEFAULT_MAX_BYTES,
                    ablations: Sequence[str] = TABLE1_ABLATIONS, contrast: list[dict] | None = None,
                    patching: list[dict] | None = None, circuit: dict | None = None, meta: dict | None = None, notes: Sequence[str] = (), batch_size: int = 16,
                    progress: bool = False) -> dict:
    """Everything the page shows, as a JSON-serialisable dict (binary arrays base64-encoded).

    ``contrast``: rows of :func:`read_contrast_heads`; ``patching``: rows of :func:`read_patching_heads`;
    ``circuit``: :func:`read_circuit`'s dict (drawn layers as rows, edges by weight)."""
    from ..engine.ablation import Ablation

    if not isinstance(query, str) or not query.strip():
        raise MatchsigError("the query is empty")
    if not isinstance(document, str) or not document.strip():
        raise MatchsigError("the document is empty")
    enc = ce.encode([query], [document])
    parts = enc.part_ids[0]
    nq = sum(1 for p in parts if p == Part.Q)
    nd = sum(1 for p in parts if p == Part.D)
    kq, kd = choose_top_k(ce.num_layers, ce.num_heads, nq, max(nd, 1), top_k, max_bytes)
    att = extract_attention(ce, query, document, top_k=kq, top_k_doc=kd)
    raw, texts, space, truncated = _display_tokens(ce, query, document, att.input_ids)
    (qs, qe), (ds, de) = att.q_span, att.d_span
    q_ids, d_ids = set(att.input_ids[qs:qe]), set(att.input_ids[ds:de])
    unk = getattr(ce.tokenizer, "unk_token_id", None)
    q_ids.discard(unk)  # two unknown characters are not the same term
    d_ids.discard(unk)
    exact = [
        (p == Part.Q and t in d_ids) or (p == Part.D and t in q_ids)
        for t, p in zip(att.input_ids, att.part_ids)
    ]
    scheme = ce.scheme
    if ablations is TABLE1_ABLATIONS:  # the model's Table 1: its possible cells, in its part names
        ablations = ("none",) + tuple(f"{x}<-{y}" for x, y in scheme.computed_cells())
    abls = [Ablation.parse(a) for a in ablations]
    if "none" not in [a.name for a in abls]:
        abls = [Ablation.none()] + abls
    scores = ce.score_many([query], [document], abls, batch_size=batch_size, encoded=enc, progress=progress)[:, 0]
    notes = [n for n in notes if n]
    if kq < min(top_k, nd) or kd < min(top_k, nq):
        notes.append(f"links reduced to the top {kq} per query token and top {kd} per document token to keep the page small")
    if truncated:
        notes.append(f"document truncated to {nd} tokens (max_length {ce.max_length})")
    stats = {k: [[_finite(v, 5) for v in row] for row in a] for k, a in att.stats.items()}
    return {
        "version": 1,
        "meta": {
            "model": str(getattr(ce, "name", "")),
            "num_labels": int(getattr(ce, "num_labels", 2)),
            "score": str(getattr(ce, "score_convention", "")),
            "query": query,
            "max_length": int(ce.max_length),
            **(meta or {}),
        },
        "layers": int(ce.num_layers),
        "heads": int(ce.num_heads),
        "parts": list(scheme.names),
        "causal": bool(scheme.causal),
        "decoder": bool(scheme.decoder),
        "tokens": raw,
        "text": texts,
        "space": [int(s) for s in space],
        "part": [int(p) for p in att.part_ids],
        "exact": [int(e) for e in exact],
        "q_span": list(att.q_span),
        "d_span": list(att.d_span),
        "qd": _pack_links(att.qd, nd),
        "dq": _pack_links(att.dq, nq),
        "stats": stats,
        "scores": [{"name": scheme.label(a.name), "score": _finite(s)} for a, s in zip(abls, scores)],
        "contrast": contrast or [],
        "patching": patching or [],
        "circuit": circuit,
        "notes": notes,
    }


def _asset(name: str) -> str:
    return resources.files("matchsig.report").joinpath("templates", name).read_text(encoding="utf-8")


def _json_for_script(data: dict) -> str:
    """JSON safe inside ``<script type="application/json">`` (no ``</script>``, no ``<!--``)."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026").replace(
        "\u2028", "\\u2028").replace("\u2029", "\\u2029")


def render_html(data: dict) -> str:
    """The self-contained page for ``data`` (from :func:`build_view_data`)."""
    page = _asset("explorer.html")
    meta = data.get("meta", {})
    title = f"matchsig view — {meta.get('query', '')}"[:200]
    # Order matters: the data goes in last, so text in it can never be taken for a placeholder.
    for marker, value in (
        ("__MATCHSIG_TITLE__", html.escape(title)),
        ("/*__MATCHSIG_CSS__*/", _asset("explorer.css")),
        ("/*__MATCHSIG_JS__*/", _asset("explorer.js").replace("</script", "<\\/script")),
        ("__MATCHSIG_DATA__", _json_for_script(data)),
    ):
        if page.count(marker) != 1:  # pragma: no cover - template is part of the package
            raise MatchsigError(f"explorer template is damaged: marker {marker} appears {page.count(marker)} times")
        page = page.replace(marker, value)
    return page


def write_view(path: str | Path, page: str) -> Path:
    out = Path(path)
    try:
        if out.parent and not out.parent.exists():
            out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(page, encoding="utf-8")
    except OSError as exc:
        raise MatchsigError(f"cannot write {out}: {exc.strerror}") from None
    return out


def build_view(ce, query: str, document: str, out: str | Path, **kwargs) -> Path:
    """Build the page of one pair and write it to ``out``; returns the path."""
    return write_view(out, render_html(build_view_data(ce, query, document, **kwargs)))
