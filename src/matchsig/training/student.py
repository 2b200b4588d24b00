"""The models of training: the student cross-encoder, the bi-encoder teacher, the head's linear probe."""

from __future__ import annotations

import random
from pathlib import Path

import torch

from .batches import _pad_pairs, _pair_ids
from .config import TrainConfig


def _set_threads(n: int) -> None:
    torch.set_num_threads(n)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass


def base_model_dir(cfg: TrainConfig) -> Path:
    """The all-MiniLM-L6-v2 folder both the teacher and the student start from."""
    from ..engine.embedded import base_model_path

    return base_model_path()


def build_student(cfg: TrainConfig):
    """A 2-label ``BertForSequenceClassification`` on the base weights, word embeddings frozen."""
    from transformers import BertConfig, BertForSequenceClassification

    from ..engine.embedded import base_state_dict

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
    """The base model's tokenizer (512 positions)."""
    from transformers import AutoTokenizer

    from ..engine.embedded import base_model_path

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


def _probe_features(model, prep, cfg: TrainConfig, tokenizer) -> tuple[torch.Tensor, torch.Tensor]:
    """Pooled student features of random (query, candidate) pairs and the teacher's scores / tau."""
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
        ids, types, mask = _pad_pairs(pairs, idx, max(len(pairs[i][0]) for i in idx), tokenizer.pad_token_id)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16):
            pooled = model.bert(input_ids=ids, attention_mask=mask, token_type_ids=types).pooler_output
        for row, i in enumerate(idx):
            feat_by[i] = pooled[row].float()
    return torch.stack([feat_by[i] for i in range(len(pairs))]).double(), torch.tensor(targets, dtype=torch.double)


@torch.no_grad()
def init_head(model, prep, cfg: TrainConfig, tokenizer, log) -> None:
    """Set the classifier to a ridge fit of the teacher's scores on pooled features (a linear probe)."""
    if cfg.probe_pairs <= 0:
        return
    X, y = _probe_features(model, prep, cfg, tokenizer)
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
