"""The lists of one training step, the student's scores on them, and the listwise loss."""

from __future__ import annotations

import math
import random
from typing import Any

import torch

from .config import TrainConfig

Pair = tuple[list[int], list[int]]


def _pair_ids(q: list[int], p: list[int], max_length: int, cls: int, sep: int) -> Pair:
    """``[CLS] q [SEP] p [SEP]`` token ids (the passage cut to fit) and their token types."""
    room = max_length - len(q) - 3
    ids = [cls] + q + [sep] + p[: max(room, 0)] + [sep]
    types = [0] * (len(q) + 2) + [1] * (len(ids) - len(q) - 2)
    return ids, types


def _pad_pairs(pairs: list[Pair], idx: list[int], width: int, pad: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Input ids, token types and attention mask of ``pairs[i] for i in idx``, padded to ``width``."""
    ids = torch.full((len(idx), width), pad, dtype=torch.long)
    types = torch.zeros((len(idx), width), dtype=torch.long)
    mask = torch.zeros((len(idx), width), dtype=torch.long)
    for row, i in enumerate(idx):
        a, t = pairs[i]
        ids[row, : len(a)] = torch.tensor(a)
        types[row, : len(t)] = torch.tensor(t)
        mask[row, : len(a)] = 1
    return ids, types, mask


def _judged_list(prep: dict[str, Any], cfg: TrainConfig, rng: random.Random, judged_q: list[int]) -> dict[str, Any]:
    """A list of one DL20 query's judged passages, stratified by grade."""
    q = rng.choice(judged_q)
    rels = prep["judged"][q]
    by_grade: dict[int, list[int]] = {}
    for p, g in sorted(rels.items()):
        by_grade.setdefault(g, []).append(p)
    picked: list[int] = []
    grades = sorted(by_grade)
    per = max(1, cfg.list_size // max(len(grades), 1))
    for g in grades:
        picked += rng.sample(by_grade[g], min(per, len(by_grade[g])))
    rest = [p for p in sorted(rels) if p not in set(picked)]
    rng.shuffle(rest)
    picked += rest[: max(0, cfg.list_size - len(picked))]
    picked = picked[: cfg.list_size]
    teach = prep["judged_teacher"][q]
    return {
        "q": q,
        "p": picked,
        "teacher": [teach[p] for p in picked],
        "grade": [rels[p] for p in picked],
        "easy": [False] * len(picked),
    }


def _distill_list(prep: dict[str, Any], cfg: TrainConfig, rng: random.Random) -> dict[str, Any]:
    """A list of a random query's teacher candidates plus random easy negatives."""
    n_p = prep["n_passages"]
    q = rng.randrange(len(prep["queries"]))
    cand = prep["cand"][q]
    scores = prep["cand_scores"][q]
    k = min(cfg.list_size - cfg.easy_negatives, len(cand))
    # favour the teacher's top: half of the list from its top-k/4, the rest from all candidates
    top = sorted(range(len(cand)), key=lambda i: -scores[i])
    head = top[: max(k, len(top) // 4)]
    first = rng.sample(head, min(k // 2, len(head)))
    others = [i for i in range(len(cand)) if i not in set(first)]
    second = rng.sample(others, min(k - len(first), len(others)))
    chosen = first + second
    ps = [cand[i] for i in chosen]
    ts = [scores[i] for i in chosen]
    easy: list[int] = []
    cand_set = set(cand)
    while len(easy) < cfg.easy_negatives and n_p > len(cand_set):
        p = rng.randrange(n_p)
        if p not in cand_set and p not in easy:
            easy.append(p)
    return {
        "q": q,
        "p": ps + easy,
        "teacher": ts + [None] * len(easy),
        "grade": [None] * (len(ps) + len(easy)),
        "easy": [False] * len(ps) + [True] * len(easy),
    }


def make_step_batch(prep: dict[str, Any], cfg: TrainConfig, step: int) -> list[dict[str, Any]]:
    """The lists of one step; a pure function of (seed, step), so a resumed run sees the same data."""
    rng = random.Random(cfg.seed * 1_000_003 + step)
    judged_q = sorted(prep["judged"])
    lists = [_judged_list(prep, cfg, rng, judged_q) for _ in range(cfg.lists_judged if judged_q else 0)]
    return lists + [_distill_list(prep, cfg, rng) for _ in range(cfg.lists_distill)]


def _forward_pairs(model, pairs: list[Pair], cfg: TrainConfig, pad: int) -> torch.Tensor:
    """Student ``logit1 - logit0`` for token-id pairs, in length-sorted micro-batches."""
    order = sorted(range(len(pairs)), key=lambda i: len(pairs[i][0]))
    out: list[torch.Tensor | None] = [None] * len(pairs)
    chunks = max(1, math.ceil(len(order) / cfg.micro_batch))
    size = math.ceil(len(order) / chunks)  # equal micro-batches: fewer distinct shapes for oneDNN
    for start in range(0, len(order), size):
        idx = order[start : start + size]
        width = max(len(pairs[i][0]) for i in idx)
        width = min(-(-width // 8) * 8, max(width, cfg.max_length))  # pad to a multiple of 8
        ids, types, mask = _pad_pairs(pairs, idx, width, pad)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16):
            logits = model(input_ids=ids, attention_mask=mask, token_type_ids=types).logits
        logits = logits.float()
        z = logits[:, 1] - logits[:, 0]
        for row, i in enumerate(idx):
            out[i] = z[row]
    return torch.stack(out)  # type: ignore[arg-type]


def _list_loss(zl: torch.Tensor, lst: dict[str, Any], cfg: TrainConfig, parts: dict[str, float]) -> list[torch.Tensor]:
    """The loss terms of one list: listwise cross-entropy, then the pointwise term if any.

    Terms, not their sum: the caller adds them one by one to the step's loss, in this order, so the
    floating-point sums (and so the trained weights) are those of the original single loop.
    """
    logp = torch.log_softmax(zl, dim=0)
    teach = torch.tensor([t if t is not None else -1.0 for t in lst["teacher"]])
    # easy negatives: the teacher's cosine is not computed for them; -1 puts them at the bottom
    target = torch.softmax(teach / cfg.tau, dim=0)
    if lst["grade"][0] is not None:
        grades = torch.tensor(lst["grade"], dtype=torch.float)
        target = torch.softmax(cfg.beta * grades, dim=0)
        if cfg.label_mix < 1.0:
            target = cfg.label_mix * target + (1 - cfg.label_mix) * torch.softmax(teach / cfg.tau, dim=0)
        ce = -(target * logp).sum()
        parts["list_judged"] += ce.item()
        bce = torch.nn.functional.binary_cross_entropy_with_logits(zl, grades / 3.0)
        parts["pointwise"] += bce.item()
        return [ce, cfg.pointwise * bce]
    ce = -(target * logp).sum()
    parts["list_distill"] += ce.item()
    easy = torch.tensor(lst["easy"])
    if not easy.any():
        return [ce]
    bce = torch.nn.functional.binary_cross_entropy_with_logits(zl[easy], torch.zeros(int(easy.sum())))
    parts["pointwise"] += bce.item()
    return [ce, cfg.pointwise * bce]


def step_loss(model, prep, lists, cfg: TrainConfig, tokenizer) -> tuple[torch.Tensor, dict[str, float]]:
    """The mean loss of one step's lists and its parts (judged, distillation, pointwise)."""
    pairs = []
    for lst in lists:
        q = prep["q_tok"][lst["q"]]
        for p in lst["p"]:
            pairs.append(_pair_ids(q, prep["p_tok"][p], cfg.max_length, tokenizer.cls_token_id, tokenizer.sep_token_id))
    z = _forward_pairs(model, pairs, cfg, tokenizer.pad_token_id)
    loss = z.new_zeros(())
    parts = {"list_judged": 0.0, "list_distill": 0.0, "pointwise": 0.0}
    pos = 0
    for lst in lists:
        n = len(lst["p"])
        for term in _list_loss(z[pos : pos + n], lst, cfg, parts):
            loss = loss + term
        pos += n
    return loss / len(lists), parts
