"""Reading a cross-encoder: the device and dtype names users give, and Hugging Face folders or hub ids.

Every problem is a one-line :class:`~matchsig.errors.MatchsigError` raised before any weights are
read where possible (an unavailable device, a folder without ``config.json``, a model without a
sequence-classification head).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ..errors import MatchsigError

EMBEDDED = "embedded"


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``device`` as a torch device (None: CUDA if available, else CPU), probed once so that an
    unavailable one fails here with a one-line error rather than at its first use."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise MatchsigError(f"unknown device {device!r}: {exc}") from None
    if dev.type != "cpu":
        try:  # torch only fails at the first use (e.g. "Torch not compiled with CUDA enabled"): probe it now
            torch.empty(1, device=dev)
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
            raise MatchsigError(f"device {str(device)!r} is not available on this machine ({first})") from None
    return dev


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    """``"fp32"``, ``"bf16"``, ... (or a torch dtype, or None: the checkpoint's) as a torch dtype."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    names = {"fp32": torch.float32, "float32": torch.float32, "fp16": torch.float16, "float16": torch.float16,
             "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}
    if dtype not in names:
        raise MatchsigError(f"unknown dtype {dtype!r}: use one of {', '.join(names)}")
    return names[dtype]


def load_pretrained(name_or_path: str | os.PathLike, device: str | torch.device | None = None,
                    dtype: str | torch.dtype | None = None):
    """``(model, tokenizer, name)`` of ``"embedded"``, a local Hugging Face folder, or a hub id."""
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoModelForSequenceClassification, AutoTokenizer

    dt = resolve_dtype(dtype)
    resolve_device(device)  # an unavailable device fails before any weights are read
    name = str(name_or_path)
    if name == EMBEDDED:
        from . import embedded

        model, tokenizer = embedded.load_model_and_tokenizer(dtype=dt)
        return model, tokenizer, EMBEDDED
    path = Path(name).expanduser()
    local = path.exists()
    if local and not (path / "config.json").is_file():
        raise MatchsigError(f"model folder {path} has no config.json: not a Hugging Face model folder")
    if not local and (name.startswith((".", "/", "~")) or name.count("/") > 1):
        raise MatchsigError(f"model folder {name} does not exist")
    try:
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(name)
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise MatchsigError(
            f"cannot load model {name!r}: not a local folder and the Hugging Face hub could not provide it ({first})"
        ) from None
    archs = getattr(config, "architectures", None) or []
    from .families import family_for

    family = family_for(config)  # an architecture matchsig has not verified is refused before any weights are read
    causal_lm = family.decoder and any(a.endswith("ForCausalLM") for a in archs)
    seq2seq = family.name == "t5"  # its family refuses anything but T5ForConditionalGeneration
    if archs and not (causal_lm or seq2seq) and not any(a.endswith("ForSequenceClassification") for a in archs):
        raise MatchsigError(
            f"model {name} has no sequence-classification head (its config declares {', '.join(archs)}); "
            "a cross-encoder needs *ForSequenceClassification weights"
        )
    try:
        kwargs = {"dtype": dt} if dt is not None else {}
        auto = AutoModelForCausalLM if causal_lm else AutoModelForSeq2SeqLM if seq2seq else AutoModelForSequenceClassification
        model, info = auto.from_pretrained(
            name, output_loading_info=True, attn_implementation=family.hf_attention, **kwargs
        )
        tokenizer = AutoTokenizer.from_pretrained(name)
    except (OSError, ValueError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise MatchsigError(f"cannot load model {name!r}: {first}") from None
    missing = [k for k in info.get("missing_keys", []) if "classifier" in k or "score" in k or "lm_head" in k]
    if missing:
        raise MatchsigError(
            f"model {name} has no trained sequence-classification head (missing weights: {', '.join(sorted(missing))})"
        )
    return model, tokenizer, name
