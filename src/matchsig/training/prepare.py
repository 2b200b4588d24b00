"""Data preparation for training (pool, teacher candidates, token ids), cached as ``prepared.pt``."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from ..errors import MatchsigError
from .config import TrainConfig
from .data import load_training_data
from .student import teacher_embed


def _load_plain(path: Path) -> Any:
    """``torch.load`` restricted to tensors and plain containers: a cache or checkpoint someone hands
    over must not run code when read. Anything else is a one-line :class:`MatchsigError`."""
    try:
        return torch.load(path, weights_only=True)
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [""])[0][:160]
        raise MatchsigError(f"{path} cannot be read safely as plain tensors ({type(exc).__name__}: {first})") from None


def _prep_fingerprint(cfg: TrainConfig) -> str:
    keys = ("teacher_k", "bm25_depth", "max_length", "max_query_length", "bf16", "tiny", "limit_queries", "label_mix")
    return json.dumps({k: getattr(cfg, k) for k in keys}, sort_keys=True)


def _cached(cache: Path, cfg: TrainConfig, log) -> dict[str, Any] | None:
    """The cached preparation when it is readable and made with the same settings."""
    if not cache.is_file():
        return None
    try:
        prep = _load_plain(cache)
    except MatchsigError as exc:
        log(f"{exc}: recomputing it")  # a cache: its content can be derived again
        return None
    if isinstance(prep, dict) and prep.get("fingerprint") == _prep_fingerprint(cfg):
        log(f"reusing {cache}")
        return prep
    return None


def _limit_queries(n: int, passages, queries, bm25, judged):
    """Keep ``n`` judged and ``n`` other BM25 queries (a test hook), renumbering what is left."""
    keep = sorted(set(judged))[:n] + [q for q in sorted(bm25) if q not in judged][:n]
    queries_keep = set(keep)
    bm25 = {q: v for q, v in bm25.items() if q in queries_keep}
    judged = {q: v for q, v in judged.items() if q in queries_keep}
    used = sorted({p for v in bm25.values() for p in v} | {p for v in judged.values() for p in v})
    remap = {p: i for i, p in enumerate(used)}
    passages = [passages[p] for p in used]
    bm25 = {q: [remap[p] for p in v] for q, v in bm25.items()}
    judged = {q: {remap[p]: g for p, g in v.items()} for q, v in judged.items()}
    qmap = {q: i for i, q in enumerate(keep)}
    queries = [queries[q] for q in keep]
    bm25 = {qmap[q]: v for q, v in bm25.items()}
    judged = {qmap[q]: v for q, v in judged.items()}
    return passages, queries, bm25, judged


def _teacher_candidates(passages, queries, bm25, judged, cfg: TrainConfig, tokenizer) -> dict[str, Any]:
    """Each query's candidates (teacher top-k over the embedded pool + BM25) and their cosines."""
    # The teacher embeds the candidate pool: every BM25 candidate (and triple passage). The judged
    # DL20 passages are embedded only when the judged lists mix in the teacher (label_mix < 1):
    # on 2 shared CPU cores the teacher pass is a large part of the hour.
    bm25 = {q: v[: cfg.bm25_depth] for q, v in bm25.items()}
    embed_ids = sorted({p for v in bm25.values() for p in v})
    if cfg.label_mix < 1.0:
        embed_ids = sorted(set(embed_ids) | {p for v in judged.values() for p in v})
    p_emb = teacher_embed([passages[p] for p in embed_ids], tokenizer, cfg, "teacher: passages")
    q_emb = teacher_embed(queries, tokenizer, cfg, "teacher: queries")
    sims_pool = q_emb @ p_emb.T
    col = {p: i for i, p in enumerate(embed_ids)}
    cand: list[list[int]] = []
    cand_scores: list[list[float]] = []
    for qn in range(len(queries)):
        top = torch.topk(sims_pool[qn], k=min(cfg.teacher_k, len(embed_ids))).indices.tolist()
        pool = list(dict.fromkeys([embed_ids[i] for i in top] + bm25.get(qn, [])))
        cand.append(pool)
        cand_scores.append(sims_pool[qn, [col[p] for p in pool]].tolist())
    judged_teacher = {q: {p: (float(sims_pool[q, col[p]]) if p in col else None) for p in v} for q, v in judged.items()}
    return {"cand": cand, "cand_scores": cand_scores, "judged_teacher": judged_teacher, "n_embedded": len(embed_ids)}


def prepare(data_dir: Path, out: Path, cfg: TrainConfig, tokenizer, log) -> dict[str, Any]:
    """Pool, queries, teacher embeddings, candidate lists and token ids; cached as ``prepared.pt``."""
    cache = out / "prepared.pt"
    prep = _cached(cache, cfg, log)
    if prep is not None:
        return prep
    passages, queries, bm25, judged, stats = load_training_data(data_dir)
    if cfg.limit_queries:
        passages, queries, bm25, judged = _limit_queries(cfg.limit_queries, passages, queries, bm25, judged)
    log(f"training data: {json.dumps(stats)}")
    teacher = _teacher_candidates(passages, queries, bm25, judged, cfg, tokenizer)
    q_tok = tokenizer(queries, add_special_tokens=False, truncation=True, max_length=cfg.max_query_length)["input_ids"]
    p_tok = tokenizer(passages, add_special_tokens=False, truncation=True, max_length=cfg.max_length)["input_ids"]
    prep = {
        "fingerprint": _prep_fingerprint(cfg),
        "stats": stats,
        "queries": queries,
        "n_passages": len(passages),
        "q_tok": q_tok,
        "p_tok": p_tok,
        "cand": teacher["cand"],
        "cand_scores": teacher["cand_scores"],
        "judged": judged,
        "judged_teacher": teacher["judged_teacher"],
        "n_embedded": teacher["n_embedded"],
    }
    tmp = cache.with_suffix(".tmp")
    torch.save(prep, tmp)
    os.replace(tmp, cache)
    return prep
