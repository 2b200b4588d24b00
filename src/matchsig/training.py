"""``matchsig train``: turn all-MiniLM-L6-v2 into a MonoBERT-style relevance cross-encoder.

Recipe (see MODEL.md for the measured results):

1. **Data** (``--data``, the offline TREC DL folder): TREC DL 2020 judged pairs (graded labels),
   the DL 2020 / DL 2022 BM25 top-100 candidate texts, the DL 2020 (200) and DL 2022 (500) query
   texts, the 100 MS MARCO train triples. **Nothing from TREC DL 2019** is used: any passage whose
   id or (normalised) text appears in the DL 2019 folder, and any query whose text does, is dropped.
2. **Teacher**: the all-MiniLM-L6-v2 bi-encoder (mean pooling, L2 norm, cosine). It embeds the pool
   of all training passages; every training query gets as candidates its top-``k`` passages by
   the teacher over that pool, plus its BM25 top-100 and judged passages where it has them.
3. **Student**: ``BertForSequenceClassification`` (2 labels) initialised from the same weights
   (pooler included); the word embeddings stay frozen. Its classifier head is initialised by a
   ridge fit of the teacher's scores on the pooled features (a linear probe), so training starts
   from a head that already ranks.
4. **Loss**, per step: ``lists_judged`` lists of DL20 judged passages (stratified by grade) whose
   target distribution mixes ``softmax(beta * grade)`` with the teacher's ``softmax(cos / tau)``,
   and ``lists_distill`` lists of teacher candidates (+ random easy negatives) with the teacher's
   distribution as target; listwise KL/CE on the student's ``logit1 - logit0``, plus a small
   pointwise BCE (graded label / 3 on judged passages, 0 on easy negatives) that keeps
   ``log_softmax(logits)[:, 1]`` meaningful as an absolute score.
5. Dynamic padding, length-sorted micro-batches, bf16 autocast on CPU, AdamW, linear warm-up then
   linear decay over ``--steps`` steps. ``--minutes`` is a wall-clock stop: the run checkpoints and
   exits, and running the same command again continues where it stopped (the batches depend only
   on (seed, step), and the RNG state is checkpointed, so a resumed run is the same run).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .errors import MatchsigError

DATA_ENV = "MATCHSIG_DATA"


def default_data_dir() -> Path:
    env = os.environ.get(DATA_ENV)
    return Path(env) if env else Path("..") / "shared" / "data"


@dataclass
class TrainConfig:
    seed: int = 0
    steps: int = 320
    minutes: float = 60.0  # wall-clock stop for this invocation (the run resumes on the next one)
    lr: float = 5e-5
    head_lr: float = 1e-4
    warmup: float = 0.06
    weight_decay: float = 0.01
    list_size: int = 12
    lists_judged: int = 1
    lists_distill: int = 1
    easy_negatives: int = 2  # per distillation list
    teacher_k: int = 40  # teacher candidates per query
    bm25_depth: int = 30  # BM25 candidates per query kept (and embedded by the teacher)
    tau: float = 0.05  # teacher temperature (cosine / tau)
    beta: float = 1.5  # label temperature (grade * beta)
    label_mix: float = 1.0  # judged lists: weight of the label distribution vs the teacher's
    pointwise: float = 0.1
    max_length: int = 192
    max_query_length: int = 48
    micro_batch: int = 16
    bf16: bool = True
    threads: int = 2
    dropout: float = 0.1
    probe_pairs: int = 512
    checkpoint_minutes: float = 4.0
    teacher_batch: int = 64
    # test hook: a tiny random BERT instead of the pip weights (shape of the real one otherwise)
    tiny: bool = False
    limit_queries: int = 0
    stop_after_steps: int = 0  # test hook: stop this invocation after that many steps (like --minutes)

    def recipe(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for k in ("minutes", "checkpoint_minutes", "threads", "teacher_batch", "stop_after_steps"):
            d.pop(k)
        return d

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.recipe(), sort_keys=True).encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------------


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def _read_tsv(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    if not path.is_file():
        return out
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            parts = line.rstrip("\n").split("\t")
            if len(parts) >= 2:
                out[parts[0]] = parts[1]
    return out


def _read_run(path: Path) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    if not path.is_file():
        return out
    for line in open(path, encoding="utf-8"):
        parts = line.split()
        if len(parts) >= 3:
            out.setdefault(parts[0], []).append(parts[2])
    return out


def _read_qrels(path: Path) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for line in open(path, encoding="utf-8"):
        parts = line.split()
        if len(parts) == 4:
            out.setdefault(parts[0], {})[parts[2]] = int(parts[3])
    return out


def load_training_data(data_dir: Path) -> tuple[list[str], list[str], dict[int, list[int]], dict[int, dict[int, int]], dict]:
    """Pool passages, queries, BM25 candidates and DL20 judgments, with everything of DL19 removed."""
    data_dir = Path(data_dir)
    need = [data_dir / "trec-dl-2020" / "qrels.txt", data_dir / "trec-dl-2020" / "passages.tsv"]
    for p in need:
        if not p.is_file():
            raise MatchsigError(f"training data not found: {p} (give --data or set {DATA_ENV})")

    # ---- DL19 exclusion sets (evaluation data: never train on it)
    dl19 = data_dir / "trec-dl-2019"
    ex_pids: set[str] = set()
    ex_texts: set[str] = set()
    for p in (dl19 / "passages.tsv", dl19 / "bm25-top100" / "passages.tsv"):
        for pid, text in _read_tsv(p).items():
            ex_pids.add(pid)
            ex_texts.add(_norm(text))
    ex_queries = {_norm(t) for t in _read_tsv(dl19 / "queries.tsv").values()}
    if not ex_pids:
        raise MatchsigError(f"{dl19} is missing: it is needed to exclude the evaluation data from training")

    pool_ids: dict[str, int] = {}
    passages: list[str] = []
    dropped = {"passages_dl19": 0, "queries_dl19": 0}
    pool_texts: dict[str, int] = {}

    def add_passage(pid: str, text: str) -> int | None:
        if pid in pool_ids:
            return pool_ids[pid]
        n = _norm(text)
        if pid in ex_pids or n in ex_texts:
            dropped["passages_dl19"] += 1
            return None
        if n in pool_texts:  # same text under another id (v1/v2): one entry
            pool_ids[pid] = pool_texts[n]
            return pool_texts[n]
        pool_ids[pid] = len(passages)
        pool_texts[n] = len(passages)
        passages.append(text)
        return pool_ids[pid]

    queries: list[str] = []
    query_ids: dict[str, int] = {}

    def add_query(key: str, text: str) -> int | None:
        n = _norm(text)
        if n in ex_queries:
            dropped["queries_dl19"] += 1
            return None
        if n in query_ids:
            return query_ids[n]
        query_ids[n] = len(queries)
        queries.append(text)
        return query_ids[n]

    bm25: dict[int, list[int]] = {}
    judged: dict[int, dict[int, int]] = {}

    # DL20 judged
    d20 = data_dir / "trec-dl-2020"
    p20 = _read_tsv(d20 / "passages.tsv")
    q20 = {**_read_tsv(d20 / "queries.all.tsv"), **_read_tsv(d20 / "queries.tsv")}
    for qid, rels in _read_qrels(d20 / "qrels.txt").items():
        if qid not in q20:
            continue
        qn = add_query("dl20:" + qid, q20[qid])
        if qn is None:
            continue
        for pid, grade in rels.items():
            if pid in p20:
                pn = add_passage(pid, p20[pid])
                if pn is not None:
                    judged.setdefault(qn, {})[pn] = grade
    # BM25 candidates (DL20, DL22)
    for year in ("trec-dl-2020", "trec-dl-2022"):
        folder = data_dir / year
        qs = {**_read_tsv(folder / "queries.all.tsv"), **_read_tsv(folder / "queries.tsv")}
        texts = _read_tsv(folder / "bm25-top100" / "passages.tsv")
        for qid, pids in _read_run(folder / "bm25-top100" / "run.bm25.top100.txt").items():
            if qid not in qs:
                continue
            qn = add_query(f"{year}:{qid}", qs[qid])
            if qn is None:
                continue
            lst = bm25.setdefault(qn, [])
            for pid in pids:
                if pid in texts:
                    pn = add_passage(pid, texts[pid])
                    if pn is not None and pn not in lst:
                        lst.append(pn)
        for qid, text in sorted(qs.items()):  # all topic texts: distillation queries
            add_query(f"{year}:{qid}", text)
    # MS MARCO train triples
    triples = data_dir / "msmarco-train" / "triples.train.small.head100.tsv"
    if triples.is_file():
        for i, line in enumerate(open(triples, encoding="utf-8")):
            parts = line.rstrip("\n").split("\t")
            if len(parts) != 3:
                continue
            qn = add_query(f"triple:{i}", parts[0])
            pos = add_passage(f"triple-pos:{i}", parts[1])
            neg = add_passage(f"triple-neg:{i}", parts[2])
            if qn is not None and pos is not None and neg is not None:
                bm25.setdefault(qn, []).extend([pos, neg])
    stats = {
        "pool_passages": len(passages),
        "queries": len(queries),
        "judged_queries": len(judged),
        "judged_pairs": sum(len(v) for v in judged.values()),
        "bm25_queries": len(bm25),
        "excluded": dropped,
    }
    return passages, queries, bm25, judged, stats


# ---------------------------------------------------------------------------------------------
# model helpers
# ---------------------------------------------------------------------------------------------


def _set_threads(n: int) -> None:
    torch.set_num_threads(n)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass


def base_model_dir(cfg: TrainConfig) -> Path:
    from .embedded import base_model_path

    return base_model_path()


def build_student(cfg: TrainConfig):
    from transformers import BertConfig, BertForSequenceClassification

    from .embedded import base_state_dict

    path = base_model_dir(cfg)
    config = BertConfig.from_pretrained(str(path))
    config.num_labels = 2
    config.architectures = ["BertForSequenceClassification"]
    config.id2label = {0: "not_relevant", 1: "relevant"}
    config.label2id = {"not_relevant": 0, "relevant": 1}
    config.hidden_dropout_prob = cfg.dropout
    config.attention_probs_dropout_prob = cfg.dropout
    if cfg.tiny:
        config.num_hidden_layers = 1
        config.intermediate_size = 64
    torch.manual_seed(cfg.seed)
    model = BertForSequenceClassification(config)
    state = base_state_dict()
    if cfg.tiny:
        state = {k: v for k, v in state.items() if k in model.state_dict() and v.shape == model.state_dict()[k].shape}
    model.load_state_dict(state, strict=False)
    with torch.no_grad():
        model.classifier.weight.normal_(0.0, 0.02)
        model.classifier.bias.zero_()
    for name, p in model.named_parameters():
        if name.startswith("bert.embeddings.word_embeddings"):
            p.requires_grad_(False)
    return model


def load_tokenizer():
    from transformers import AutoTokenizer

    from .embedded import base_model_path

    tok = AutoTokenizer.from_pretrained(str(base_model_path()))
    tok.model_max_length = 512
    return tok


@torch.no_grad()
def teacher_embed(texts: list[str], tokenizer, cfg: TrainConfig, desc: str) -> torch.Tensor:
    """all-MiniLM-L6-v2 sentence embeddings (mean pooling + L2 norm), max 256 tokens."""
    from tqdm import tqdm
    from transformers import BertModel

    model = BertModel.from_pretrained(str(base_model_dir(cfg)), add_pooling_layer=False).eval()
    if cfg.tiny:
        model.encoder.layer = model.encoder.layer[:1]
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out = torch.zeros(len(texts), model.config.hidden_size)
    for start in tqdm(range(0, len(order), cfg.teacher_batch), desc=desc, unit="batch"):
        idx = order[start : start + cfg.teacher_batch]
        enc = tokenizer([texts[i] for i in idx], truncation=True, max_length=256, padding=True, return_tensors="pt")
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16):
            hidden = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state
        mask = enc["attention_mask"].unsqueeze(-1).float()
        emb = (hidden.float() * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        out[idx] = torch.nn.functional.normalize(emb, dim=-1)
    return out


# ---------------------------------------------------------------------------------------------
# preparation (cached in the output folder)
# ---------------------------------------------------------------------------------------------


def _load_plain(path: Path) -> Any:
    """``torch.load`` restricted to tensors and plain containers: a cache or checkpoint someone hands
    over must not run code when read. Anything else is a one-line :class:`MatchsigError`."""
    try:
        return torch.load(path, weights_only=True)
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [""])[0][:160]
        raise MatchsigError(f"{path} cannot be read safely as plain tensors ({type(exc).__name__}: {first})") from None


def prepare(data_dir: Path, out: Path, cfg: TrainConfig, tokenizer, log) -> dict[str, Any]:
    """Pool, queries, teacher embeddings, candidate lists and token ids; cached as ``prepared.pt``."""
    cache = out / "prepared.pt"
    if cache.is_file():
        try:
            prep = _load_plain(cache)
        except MatchsigError as exc:
            log(f"{exc}: recomputing it")  # a cache: its content can be derived again
            prep = {}
        if isinstance(prep, dict) and prep.get("fingerprint") == _prep_fingerprint(cfg):
            log(f"reusing {cache}")
            return prep
    passages, queries, bm25, judged, stats = load_training_data(data_dir)
    if cfg.limit_queries:
        keep = sorted(set(judged))[: cfg.limit_queries] + [q for q in sorted(bm25) if q not in judged][: cfg.limit_queries]
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
    log(f"training data: {json.dumps(stats)}")
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
    q_tok = tokenizer(queries, add_special_tokens=False, truncation=True, max_length=cfg.max_query_length)["input_ids"]
    p_tok = tokenizer(passages, add_special_tokens=False, truncation=True, max_length=cfg.max_length)["input_ids"]
    prep = {
        "fingerprint": _prep_fingerprint(cfg),
        "stats": stats,
        "queries": queries,
        "n_passages": len(passages),
        "q_tok": q_tok,
        "p_tok": p_tok,
        "cand": cand,
        "cand_scores": cand_scores,
        "judged": judged,
        "judged_teacher": {
            q: {p: (float(sims_pool[q, col[p]]) if p in col else None) for p in v} for q, v in judged.items()
        },
        "n_embedded": len(embed_ids),
    }
    tmp = cache.with_suffix(".tmp")
    torch.save(prep, tmp)
    os.replace(tmp, cache)
    return prep


def _prep_fingerprint(cfg: TrainConfig) -> str:
    keys = ("teacher_k", "bm25_depth", "max_length", "max_query_length", "bf16", "tiny", "limit_queries", "label_mix")
    return json.dumps({k: getattr(cfg, k) for k in keys}, sort_keys=True)


# ---------------------------------------------------------------------------------------------
# batches
# ---------------------------------------------------------------------------------------------


def _pair_ids(q: list[int], p: list[int], max_length: int, cls: int, sep: int) -> tuple[list[int], list[int]]:
    room = max_length - len(q) - 3
    ids = [cls] + q + [sep] + p[: max(room, 0)] + [sep]
    types = [0] * (len(q) + 2) + [1] * (len(ids) - len(q) - 2)
    return ids, types


def make_step_batch(prep: dict[str, Any], cfg: TrainConfig, step: int) -> list[dict[str, Any]]:
    """The lists of one step; a pure function of (seed, step), so a resumed run sees the same data."""
    rng = random.Random(cfg.seed * 1_000_003 + step)
    lists = []
    judged_q = sorted(prep["judged"])
    n_q = len(prep["queries"])
    n_p = prep["n_passages"]
    for _ in range(cfg.lists_judged if judged_q else 0):
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
        lists.append(
            {
                "q": q,
                "p": picked,
                "teacher": [teach[p] for p in picked],
                "grade": [rels[p] for p in picked],
                "easy": [False] * len(picked),
            }
        )
    for _ in range(cfg.lists_distill):
        q = rng.randrange(n_q)
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
        easy = []
        cand_set = set(cand)
        while len(easy) < cfg.easy_negatives and n_p > len(cand_set):
            p = rng.randrange(n_p)
            if p not in cand_set and p not in easy:
                easy.append(p)
        lists.append(
            {
                "q": q,
                "p": ps + easy,
                "teacher": ts + [None] * len(easy),
                "grade": [None] * (len(ps) + len(easy)),
                "easy": [False] * len(ps) + [True] * len(easy),
            }
        )
    return lists


# ---------------------------------------------------------------------------------------------
# scoring / loss
# ---------------------------------------------------------------------------------------------


def _forward_pairs(model, pairs: list[tuple[list[int], list[int]]], cfg: TrainConfig, pad: int) -> torch.Tensor:
    """Student ``logit1 - logit0`` for token-id pairs, in length-sorted micro-batches."""
    order = sorted(range(len(pairs)), key=lambda i: len(pairs[i][0]))
    out: list[torch.Tensor | None] = [None] * len(pairs)
    chunks = max(1, math.ceil(len(order) / cfg.micro_batch))
    size = math.ceil(len(order) / chunks)  # equal micro-batches: fewer distinct shapes for oneDNN
    for start in range(0, len(order), size):
        idx = order[start : start + size]
        width = max(len(pairs[i][0]) for i in idx)
        width = min(-(-width // 8) * 8, max(width, cfg.max_length))  # pad to a multiple of 8
        ids = torch.full((len(idx), width), pad, dtype=torch.long)
        types = torch.zeros((len(idx), width), dtype=torch.long)
        mask = torch.zeros((len(idx), width), dtype=torch.long)
        for row, i in enumerate(idx):
            a, t = pairs[i]
            ids[row, : len(a)] = torch.tensor(a)
            types[row, : len(t)] = torch.tensor(t)
            mask[row, : len(a)] = 1
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16):
            logits = model(input_ids=ids, attention_mask=mask, token_type_ids=types).logits
        logits = logits.float()
        z = logits[:, 1] - logits[:, 0]
        for row, i in enumerate(idx):
            out[i] = z[row]
    return torch.stack(out)  # type: ignore[arg-type]


def step_loss(model, prep, lists, cfg: TrainConfig, tokenizer) -> tuple[torch.Tensor, dict[str, float]]:
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
        zl = z[pos : pos + n]
        pos += n
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
            loss = loss + ce + cfg.pointwise * bce
        else:
            ce = -(target * logp).sum()
            parts["list_distill"] += ce.item()
            loss = loss + ce
            easy = torch.tensor(lst["easy"])
            if easy.any():
                bce = torch.nn.functional.binary_cross_entropy_with_logits(zl[easy], torch.zeros(int(easy.sum())))
                parts["pointwise"] += bce.item()
                loss = loss + cfg.pointwise * bce
    return loss / len(lists), parts


# ---------------------------------------------------------------------------------------------
# head initialisation: linear probe of the teacher's scores
# ---------------------------------------------------------------------------------------------


@torch.no_grad()
def init_head(model, prep, cfg: TrainConfig, tokenizer, log) -> None:
    if cfg.probe_pairs <= 0:
        return
    from tqdm import tqdm

    rng = random.Random(cfg.seed + 7)
    pairs, targets = [], []
    n_q = len(prep["queries"])
    while len(pairs) < cfg.probe_pairs:
        q = rng.randrange(n_q)
        cand, scores = prep["cand"][q], prep["cand_scores"][q]
        i = rng.randrange(len(cand))
        pairs.append(_pair_ids(prep["q_tok"][q], prep["p_tok"][cand[i]], cfg.max_length, tokenizer.cls_token_id, tokenizer.sep_token_id))
        targets.append(scores[i] / cfg.tau)
    model.eval()
    order = sorted(range(len(pairs)), key=lambda i: len(pairs[i][0]))
    feat_by = {}
    for start in tqdm(range(0, len(order), 32), desc="head init (probe)", unit="batch"):
        idx = order[start : start + 32]
        width = max(len(pairs[i][0]) for i in idx)
        ids = torch.full((len(idx), width), tokenizer.pad_token_id, dtype=torch.long)
        types = torch.zeros_like(ids)
        mask = torch.zeros_like(ids)
        for row, i in enumerate(idx):
            a, t = pairs[i]
            ids[row, : len(a)] = torch.tensor(a)
            types[row, : len(t)] = torch.tensor(t)
            mask[row, : len(a)] = 1
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16):
            pooled = model.bert(input_ids=ids, attention_mask=mask, token_type_ids=types).pooler_output
        for row, i in enumerate(idx):
            feat_by[i] = pooled[row].float()
    X = torch.stack([feat_by[i] for i in range(len(pairs))]).double()
    y = torch.tensor(targets, dtype=torch.double)
    y = y - y.mean()
    mu = X.mean(0)
    Xc = X - mu
    lam = 1e-1 * Xc.pow(2).sum() / Xc.shape[1]
    w = torch.linalg.solve(Xc.T @ Xc + lam * torch.eye(Xc.shape[1], dtype=torch.double), Xc.T @ y)
    pred = Xc @ w
    corr = float(torch.corrcoef(torch.stack([pred, y]))[0, 1])
    log(f"head init: ridge probe of teacher/tau on pooled features, train corr {corr:.3f}")
    w = w.float()
    model.classifier.weight[1] = w / 2
    model.classifier.weight[0] = -w / 2
    b = -float(mu.float() @ w)
    model.classifier.bias[1] = b / 2
    model.classifier.bias[0] = -b / 2


# ---------------------------------------------------------------------------------------------
# the training loop
# ---------------------------------------------------------------------------------------------


def _lr_lambda(cfg: TrainConfig):
    warm = max(1, int(cfg.warmup * cfg.steps))

    def f(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return max(0.0, (cfg.steps - step) / max(1, cfg.steps - warm))

    return f


def train(data_dir: Path, out: Path, cfg: TrainConfig, log=print) -> dict[str, Any]:
    """Run (or continue) training into ``out``; returns a summary. Final: ``out/embedded/`` + ``out/model/``."""
    from tqdm import tqdm

    from .embedded import export_delta

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _set_threads(cfg.threads)
    t_start = time.time()
    cfg_path = out / "train_config.json"
    if cfg_path.is_file():
        old = json.loads(cfg_path.read_text())
        if old.get("fingerprint") != cfg.fingerprint():
            raise MatchsigError(f"{out} holds a run with another recipe; use a new --out folder")
    else:
        cfg_path.write_text(json.dumps({"fingerprint": cfg.fingerprint(), "recipe": cfg.recipe()}, indent=2) + "\n")

    tokenizer = load_tokenizer()
    prep = prepare(Path(data_dir), out, cfg, tokenizer, log)
    model = build_student(cfg)
    decay, no_decay, head = [], [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if name.startswith(("classifier.", "bert.pooler.")):
            head.append(p)
        elif p.ndim < 2:
            no_decay.append(p)
        else:
            decay.append(p)
    opt = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": cfg.weight_decay, "lr": cfg.lr},
            {"params": no_decay, "weight_decay": 0.0, "lr": cfg.lr},
            {"params": head, "weight_decay": 0.0, "lr": cfg.head_lr},
        ],
    )
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(cfg))
    ckpt = out / "checkpoint.pt"
    history: list[dict[str, Any]] = []
    step = 0
    elapsed_before = 0.0
    if ckpt.is_file():
        try:
            state = _load_plain(ckpt)
        except MatchsigError as exc:
            raise MatchsigError(f"{exc}; delete it to train from the start") from None
        model.load_state_dict(state["model"], strict=False)
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"])
        step = state["step"]
        history = state["history"]
        elapsed_before = state.get("train_seconds", 0.0)
        log(f"resuming {ckpt} at step {step}/{cfg.steps}")
    else:
        init_head(model, prep, cfg, tokenizer, log)
        torch.manual_seed(cfg.seed)

    def save_checkpoint() -> None:
        trainable = {k: v for k, v in model.state_dict().items() if not k.startswith("bert.embeddings.word_embeddings")}
        tmp = ckpt.with_suffix(".tmp")
        torch.save(
            {
                "model": trainable,
                "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(),
                "rng": torch.get_rng_state(),
                "step": step,
                "history": history,
                "train_seconds": elapsed_before + (time.time() - t_start),
                "fingerprint": cfg.fingerprint(),
            },
            tmp,
        )
        os.replace(tmp, ckpt)

    model.train()
    last_ckpt = time.time()
    deadline = t_start + cfg.minutes * 60.0
    bar = tqdm(total=cfg.steps, initial=step, desc="training", unit="step")
    run_loss = None
    stopped_early = False
    while step < cfg.steps:
        if time.time() > deadline or (cfg.stop_after_steps and step >= cfg.stop_after_steps):
            stopped_early = True
            break
        lists = make_step_batch(prep, cfg, step)
        loss, parts = step_loss(model, prep, lists, cfg, tokenizer)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
        opt.step()
        sched.step()
        step += 1
        loss_value = loss.item()
        run_loss = loss_value if run_loss is None else 0.98 * run_loss + 0.02 * loss_value
        bar.update(1)
        bar.set_postfix(loss=f"{run_loss:.3f}", lr=f"{sched.get_last_lr()[0]:.1e}")
        if step % 25 == 0:
            history.append({"step": step, "loss": round(run_loss, 4), **{k: round(v, 4) for k, v in parts.items()}})
        if time.time() - last_ckpt > cfg.checkpoint_minutes * 60 or step == cfg.steps:
            save_checkpoint()
            last_ckpt = time.time()
    bar.close()
    save_checkpoint()
    train_seconds = elapsed_before + (time.time() - t_start)
    summary = {"step": step, "steps": cfg.steps, "train_seconds": round(train_seconds, 1), "finished": step >= cfg.steps}
    if stopped_early:
        log(f"stopped at step {step}/{cfg.steps} after --minutes {cfg.minutes}; run the same command again to continue")
        return summary
    model.eval()
    if cfg.tiny:  # test hook: a tiny model has no delta against the real base; save it whole
        model.save_pretrained(str(out / "model"))
        summary["model"] = str(out / "model")
        return summary
    info = {
        "recipe": cfg.recipe(),
        "seed": cfg.seed,
        "steps": step,
        "train_seconds": round(train_seconds, 1),
        "training_data": prep["stats"],
        "max_length": cfg.max_length,
        "trained_with": "matchsig train",
    }
    manifest = export_delta(model, out / "embedded", info)
    summary["embedded"] = str(out / "embedded")
    summary["reconstructed_state_sha256"] = manifest["reconstructed_state_sha256"]
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    log(f"done: {step} steps in {train_seconds / 60:.1f} min; delta in {out / 'embedded'}")
    return summary
