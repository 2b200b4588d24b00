"""`CrossEncoder`: a Hugging Face sequence classifier read as a query-document relevance scorer.

>>> ce = CrossEncoder.load("embedded")
>>> ce.score(["what is a flea"], ["The cat flea is an insect."], ablation=Ablation.parse("D<-D"))

Inputs are tokenised once, sorted by length, dynamically padded and run in batches
(:meth:`CrossEncoder.batches`, :meth:`CrossEncoder.collate`, :meth:`CrossEncoder.forward`: the
public route for code that runs its own forwards). Ablations and statistics happen inside the
model's own attention call (:mod:`matchsig.attention`, kernels from :mod:`matchsig.kernels`),
other interventions at named sites (:mod:`matchsig.hooks`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from ..errors import MatchsigError
from . import attention
from .ablation import Ablation, as_ablation
from .attention import ATTN_NAME
from .attention_stats import DIRECTIONS, AttentionStats, statistic_names
from .context import ForwardContext, use_context
from .encoding import Encoded, encode_pairs
from .families import Family, family_for
from .interventions import Interventions
from .kernels import KERNELS
from .loading import EMBEDDED, load_pretrained  # noqa: F401  (EMBEDDED: kept importable from here)
from .loading import resolve_device as _resolve_device
from .parts import PAD, PairLayout, probe_layout
from .progress import _progress
from .prompts import check_padding, translate_spec
from .scheme import DEC, PartScheme
from .selfcheck import SelfCheck, self_check
from .t5 import check_decoder_part, split_blocks


@dataclass
class Batch:
    """Rows of an :class:`Encoded`, padded to one width on the model's device: one forward's input.

    ``rows``: the indices of the pairs in the :class:`Encoded`; ``model_inputs``: the Hugging Face
    keyword arguments (``input_ids``, ``attention_mask``, ``token_type_ids`` where the model has
    them); ``part_ids``: (B, T) long, ``PAD`` on padding; ``input_ids``: (B, T) long.
    """

    rows: np.ndarray
    model_inputs: dict[str, torch.Tensor]
    part_ids: torch.Tensor
    input_ids: torch.Tensor

    def __len__(self) -> int:
        return len(self.rows)

    def select(self, index: torch.Tensor | Sequence[int]) -> "Batch":
        """The batch's rows ``index`` (positions in this batch, repeats allowed), at the same width."""
        idx = torch.as_tensor(index, dtype=torch.long, device=self.part_ids.device)
        return Batch(np.asarray(self.rows)[idx.cpu().numpy()], {k: v[idx] for k, v in self.model_inputs.items()},
                     self.part_ids[idx], self.input_ids[idx])


class CrossEncoder(Interventions):
    """A cross-encoder over ``[CLS] q [SEP] d [SEP]`` with exact attention-direction interventions.

    Score convention: 2 labels -> log-softmax of label 1 (MonoBERT); 1 label -> the logit.
    """

    def __init__(self, model: nn.Module, tokenizer, max_length: int = 512, name: str | None = None,
                 device: str | torch.device | None = None, template=None):
        self.name = name or getattr(model.config, "_name_or_path", None) or type(model).__name__
        self.tokenizer = tokenizer
        self.device = _resolve_device(device)
        self.family: Family = family_for(model.config)
        if self.family.decoder and type(model).__name__.endswith("ForCausalLM"):
            from .scoring_heads import YesNoHead

            model = YesNoHead(model, tokenizer)
            template = template if template is not None else self.family.lm_template
        elif self.family.name == "t5":
            from .t5 import TrueFalseHead

            model = TrueFalseHead(model, tokenizer)  # refuses anything but T5ForConditionalGeneration
        cfg = model.config
        num_labels = getattr(cfg, "num_labels", None)
        if num_labels not in (1, 2):
            raise MatchsigError(
                f"model {self.name}: {num_labels} output labels; a cross-encoder needs 1 (score = logit) "
                "or 2 (score = log-softmax of label 1)"
            )
        self.num_labels = int(num_labels)
        self.readout = self.family.readout(cfg)
        limit = getattr(cfg, "max_position_embeddings", None) or max_length
        self.max_length = int(min(max_length, limit))
        self.part_names: tuple[str, ...] = self.family.part_names
        #: the part names, possible directions and aggregating part the experiments and report read
        self.scheme = PartScheme(self.part_names, self.family.causal, self.readout == "decoder",
                                 {"last": "SEP2", "decoder": DEC}.get(self.readout, "CLS"))
        self.template = template if template is not None else self.family.template
        self.layout: PairLayout | None = None if self.template is not None else probe_layout(tokenizer)
        if self.template is not None:
            check_padding(model, tokenizer, self.name)
        self._own_attention = getattr(cfg, "_attn_implementation", None) or self.family.hf_attention
        if self._own_attention == ATTN_NAME:
            self._own_attention = self.family.hf_attention
        attention.register()
        try:
            if self.family.install is not None:
                self.family.install(model)
            else:
                model.set_attn_implementation(ATTN_NAME)
        except MatchsigError:
            raise
        except Exception as exc:  # transformers raises ValueError/NotImplementedError variants
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise MatchsigError(
                f"model {self.name} ({type(model).__name__}) cannot use a custom attention function: {first}"
            ) from None
        self.model = model.to(self.device).eval()
        self._find_attention_modules()
        self.check: SelfCheck = self_check(self)

    # ---- loading -------------------------------------------------------------------------------
    @classmethod
    def load(cls, name_or_path: str | os.PathLike, device: str | torch.device | None = None,
             dtype: str | torch.dtype | None = None, max_length: int = 512, template=None) -> "CrossEncoder":
        """Load ``"embedded"``, a local Hugging Face folder, or a hub id (e.g. ``castorini/monobert-large-msmarco``).
        ``template``: a decoder reranker's prompt (:class:`matchsig.engine.prompts.PromptTemplate`; default: its family's)."""
        model, tokenizer, name = load_pretrained(name_or_path, device, dtype)
        return cls(model, tokenizer, max_length=max_length, name=name, device=device, template=template)

    def save(self, folder: str | os.PathLike) -> Path:
        """Write a standard Hugging Face folder (config, safetensors weights, tokenizer)."""
        out = Path(folder)
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise MatchsigError(f"cannot write model folder {out}: {exc.strerror}") from None
        impl = self.model.config._attn_implementation
        try:
            self.model.config._attn_implementation = self.family.hf_attention  # the folder must not depend on matchsig
            self.model.save_pretrained(out)
        finally:
            self.model.config._attn_implementation = impl
        self.tokenizer.save_pretrained(out)
        return out

    def ablation(self, value) -> "Ablation":
        """``value`` (an :class:`Ablation`, a spec string in this model's part names, or None) as an ablation;
        a decoder's spec names PRE, Q, MID, D, LAST, and one whose every direction a causal mask makes
        impossible (into an earlier part, e.g. ``Q<-D``) is refused in one line."""
        if isinstance(value, str) and self.template is not None:
            value = translate_spec(value, self.part_names)
        ab = as_ablation(value)
        check_decoder_part(self, ab)
        cells = {(x.name, y.name) for m in getattr(ab, "members", (ab,)) for x, y in m.directions}
        if cells and not any(self.scheme.possible(x, y) for x, y in cells):
            names = ", ".join(sorted(self.scheme.label(f"{x}<-{y}") for x, y in cells))
            raise MatchsigError(f"ablation {names}: impossible under the causal mask of {self.name} (each cut "
                                "part comes after the part that would read it); nothing to cut")
        return ab

    # ---- structure -----------------------------------------------------------------------------
    def _find_attention_modules(self) -> None:
        """Run a probe pair and number attention modules in call order (= layer order).

        This checks, rather than assumes, that the model routes attention through our function: a
        model that does not would silently ignore every ablation.
        """
        batch = self.collate(self.encode(["a"], ["b"]), [0])
        probe: list = []
        with torch.inference_mode(), use_context(ForwardContext(part_ids=batch.part_ids, probe=probe)):
            self.model(**batch.model_inputs)
        if not probe:
            raise MatchsigError(
                f"model {self.name} ({type(self.model).__name__}) does not route attention through transformers' "
                "AttentionInterface: attention interventions are not supported for it"
            )
        self.attention_modules = [m for m, _ in probe]
        if len({id(m) for m in self.attention_modules}) != len(self.attention_modules):
            raise MatchsigError(f"model {self.name}: an attention module is called twice per forward; unsupported")
        for i, m in enumerate(self.attention_modules):
            m._matchsig_layer = i
            m._matchsig_model_mask = bool(self.family.model_mask(m))
        self.num_layers = len(probe)
        self.num_heads = int(probe[0][1])

    # ---- tokenisation --------------------------------------------------------------------------
    def encode(self, queries: Sequence[str], documents: Sequence[str]) -> Encoded:
        """Tokenise pairs (the pair template, or a decoder's prompt); only documents are truncated."""
        return encode_pairs(self.tokenizer, self.layout, self.template, self.max_length, queries, documents)

    @property
    def n_template_tokens(self) -> int:
        """Tokens of an input that are neither query nor document: the pair template's special tokens, or a
        prompt's text around them (PRE, MID, LAST/POST)."""
        if self.layout is not None:
            return self.layout.n_special
        if not hasattr(self, "_n_template"):
            from .parts import Part

            parts = self.encode(["x"], ["y"]).part_ids[0]
            self._n_template = sum(1 for p in parts if p not in (Part.Q, Part.D))
        return self._n_template

    @property
    def score_convention(self) -> str:
        """How the score is read, in words (``inspect``, ``summary.json``, the report)."""
        from .scoring_heads import YesNoHead
        from .t5 import TrueFalseHead

        if isinstance(self.model, TrueFalseHead):
            return 'log P("true") over {"true", "false"} at the first decoder step (pyterrier_t5)'
        if isinstance(self.model, YesNoHead):
            return 'logit("yes") - logit("no") at the last position'
        where = {"first": "the first token", "last": "the last token", "mean": "the mean of the tokens"}.get(
            self.readout, self.readout)
        return (f"log-softmax of label 1 (2 labels), from {where}" if self.num_labels == 2
                else f"the single logit (1 label), from {where}")

    def parts(self, query: str, document: str) -> list[tuple[str, str]]:
        """The labelling of one pair: ``[(token, part), ...]``, e.g. ``("[CLS]", "CLS")`` (a decoder's parts
        are PRE, Q, MID, D, LAST)."""
        enc = self.encode([query], [document])
        tokens = self.tokenizer.convert_ids_to_tokens(enc.input_ids[0])
        return [(t, self.part_names[p]) for t, p in zip(tokens, enc.part_ids[0])]

    # ---- batches and forwards: the public route into the model for explorer, patching, experiments
    def collate(self, enc: Encoded, rows: Sequence[int]) -> Batch:
        """Pairs ``rows`` of ``enc`` as one padded :class:`Batch` on the device."""
        n = len(rows)
        width = max(len(enc.input_ids[i]) for i in rows)
        pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        ids = torch.full((n, width), pad_id, dtype=torch.long)
        parts = torch.full((n, width), PAD, dtype=torch.long)
        mask = torch.zeros((n, width), dtype=torch.long)
        types = torch.zeros((n, width), dtype=torch.long) if enc.token_type_ids is not None else None
        for r, i in enumerate(rows):
            k = len(enc.input_ids[i])
            ids[r, :k] = torch.tensor(enc.input_ids[i])
            parts[r, :k] = torch.tensor(enc.part_ids[i])
            mask[r, :k] = 1
            if types is not None:
                types[r, :k] = torch.tensor(enc.token_type_ids[i])
        inputs = {"input_ids": ids, "attention_mask": mask}
        if types is not None:
            inputs["token_type_ids"] = types
        dev = self.device
        return Batch(np.asarray(rows), {k: v.to(dev) for k, v in inputs.items()}, parts.to(dev), ids.to(dev))

    def batches(self, lengths: np.ndarray, batch_size: int, max_tokens: int | None = None) -> list[np.ndarray]:
        """Row indices of length-sorted batches of items with token counts ``lengths`` (longest first,
        so memory peaks at once and early); ``max_tokens`` also bounds rows x longest length."""
        if batch_size < 1:
            raise MatchsigError(f"batch_size must be >= 1, got {batch_size}")
        order = np.argsort(-lengths, kind="stable")
        out, start = [], 0
        while start < len(order):
            size = batch_size
            if max_tokens:
                size = max(1, min(batch_size, max_tokens // int(lengths[order[start]])))
            out.append(order[start : start + size])
            start += size
        return out

    def padded_batches(self, enc: Encoded, batch_size: int) -> Iterator[Batch]:
        """``enc`` as padded, length-sorted :class:`Batch` es (``batch.rows`` says which pairs)."""
        for rows in self.batches(enc.lengths(), batch_size):
            yield self.collate(enc, rows)

    def forward(self, batch: Batch, *, blocks: list[torch.Tensor | None] | None = None, hooks=None,
                kernel: str = "auto", start: tuple[int, torch.Tensor] | None = None,
                output_hidden_states: bool = False):
        """Run the model on ``batch`` under a matchsig context; the Hugging Face output (``.logits``, ...).

        ``blocks[l]``: None or a (B or 1, H, 6, 6) bool tensor of the part pairs cut in layer l
        (:meth:`Ablation.block_masks`); ``hooks``: named sites -> functions (:mod:`matchsig.hooks`);
        ``kernel``: a kernel order (:mod:`matchsig.kernels`); ``start=(l, hidden)``: run layers l..
        only, from ``hidden``, the (B, T, d_model) input of layer l. The grad mode is the caller's.
        """
        cross = None
        if blocks is not None and self.family.name == "t5":  # row DEC of each block cuts the decoder's reads
            blocks, cross = split_blocks(blocks)
        ctx = ForwardContext(part_ids=batch.part_ids, blocks=blocks, kernel=KERNELS.check(kernel),
                             input_ids=batch.input_ids, hooks=hooks, cross=cross)
        extra = {"output_hidden_states": True} if output_hidden_states else {}
        with use_context(ctx), (self._start_at(*start) if start is not None else contextlib.nullcontext()):
            return self.model(**batch.model_inputs, **extra)

    def scores_from_logits(self, logits: torch.Tensor) -> np.ndarray:
        """Scores (float64) from (B, num_labels) logits: the log-softmax of label 1, or the one logit."""
        logits = logits.to(torch.promote_types(logits.dtype, torch.float32))  # fp32, or fp64 for a float64 model
        out = torch.log_softmax(logits, dim=-1)[:, 1] if self.num_labels == 2 else logits[:, 0]
        return out.cpu().numpy().astype(np.float64)

    def margins_from_logits(self, logits: torch.Tensor) -> np.ndarray:
        """Ranking keys (float64) that order pairs as the scores do without saturating: logit 1 minus logit 0 for
        2 labels (log P(relevant) = -log(1 + exp(-margin)) is monotone in it, but in fp32 it rounds to exactly
        0 for margins above ~16.6, tying confident pairs), the one logit otherwise."""
        logits = logits.to(torch.promote_types(logits.dtype, torch.float32)).cpu().numpy().astype(np.float64)
        return logits[:, 1] - logits[:, 0] if self.num_labels == 2 else logits[:, 0]

    def _block_tensors(self, ablations: Sequence[Ablation]) -> list[list[torch.Tensor | None]]:
        """Per ablation, per layer: (1, H, 6, 6) bool tensors on the device or None."""
        out = []
        for ab in ablations:
            masks = ab.block_masks(self.num_layers, self.num_heads)
            cache: dict[int, torch.Tensor] = {}
            layer_blocks = []
            for m in masks:
                if m is None:
                    layer_blocks.append(None)
                else:
                    key = id(m)
                    if key not in cache:
                        cache[key] = torch.from_numpy(m)[None].to(self.device)
                    layer_blocks.append(cache[key])
            out.append(layer_blocks)
        return out

    # ---- scoring -------------------------------------------------------------------------------
    def score(self, queries: Sequence[str], documents: Sequence[str], ablation: Ablation | str | None = None,
              batch_size: int = 32, progress: bool = False, kernel: str = "auto") -> np.ndarray:
        """One relevance score per (query, document) pair, in input order.

        ``ablation``: an :class:`Ablation` (or spec string) applied to every pair.
        ``kernel``: ``"auto"`` (fused SDPA in layers without intervention, one fused pass plus an exact
        correction in cut layers), ``"eager"`` (the reference math everywhere), or another kernel
        order of :mod:`matchsig.kernels` (``"math"``, ``"correct"``, ``"fused"``).
        """
        return self.score_many(queries, documents, [ablation], batch_size=batch_size,
                               progress=progress, kernel=kernel)[0]

    def score_many(self, queries: Sequence[str], documents: Sequence[str], ablations: Sequence[Ablation | str | None],
                   batch_size: int = 32, progress: bool = False, kernel: str = "auto",
                   encoded: Encoded | None = None, margins: np.ndarray | None = None) -> np.ndarray:
        """Scores of every pair under every ablation: array (len(ablations), n_pairs).

        Work items (ablation, pair) are sorted by length and batched together, so several
        configurations of the same pairs share batches; each row carries its own cut blocks.
        ``margins``: an array of the same shape to fill with the ranking keys of the same forwards
        (:meth:`margins_from_logits`), for rankings that must not tie on saturated scores.
        """
        KERNELS.check(kernel)
        abls = [self.ablation(a) for a in ablations]
        enc = encoded if encoded is not None else self.encode(queries, documents)
        n = len(enc)
        out = np.zeros((len(abls), n), dtype=np.float64)
        if n == 0 or not abls:
            return out
        blocks = self._block_tensors(abls)
        items_pair = np.tile(np.arange(n), len(abls))
        items_abl = np.repeat(np.arange(len(abls)), n)
        bar = _progress(len(items_pair), progress, "scoring")
        with torch.inference_mode():
            for rows in self.batches(enc.lengths()[items_pair], batch_size):
                pairs, kinds = items_pair[rows], items_abl[rows]
                logits = self.forward(self.collate(enc, pairs), blocks=self._row_blocks(blocks, kinds),
                                      kernel=kernel).logits
                out[kinds, pairs] = self.scores_from_logits(logits)
                if margins is not None:
                    margins[kinds, pairs] = self.margins_from_logits(logits)
                bar.update(len(rows))
        bar.close()
        return out

    def _row_blocks(self, blocks: list[list[torch.Tensor | None]], kinds: np.ndarray) -> list[torch.Tensor | None] | None:
        """Per layer, a (B or 1, H, 6, 6) block tensor for the rows of a batch, or None if no row cuts."""
        distinct = np.unique(kinds)
        if len(distinct) == 1:
            per_layer = blocks[int(distinct[0])]
            return per_layer if any(b is not None for b in per_layer) else None
        result: list[torch.Tensor | None] = []
        for layer in range(self.num_layers):
            col = [blocks[int(k)][layer] for k in distinct]
            if all(b is None for b in col):
                result.append(None)
                continue
            zero = torch.zeros((1, self.num_heads, PAD + 1, PAD + 1), dtype=torch.bool, device=self.device)
            stacked = torch.cat([b if b is not None else zero for b in col], 0)  # (K, H, 6, 6)
            pos = torch.from_numpy(np.searchsorted(distinct, kinds)).to(self.device)
            result.append(stacked[pos])
        return result

    def score_layer_curve(self, queries: Sequence[str], documents: Sequence[str], ablation: Ablation | str,
                          batch_size: int = 32, progress: bool = False, kernel: str = "auto",
                          encoded: Encoded | None = None) -> np.ndarray:
        """Scores when cutting ``ablation``'s directions/heads in layers 0..l, for every l.

        Returns (num_layers, n_pairs); row l equals ``score(..., ablation.with_layers(range(l + 1)))``.
        The ablated prefix is computed once: one forward ablated in every layer yields the hidden
        state after layers 0..l for all l, and each row then runs only the unablated suffix.
        """
        KERNELS.check(kernel)
        ab = self.ablation(ablation)
        check_decoder_part(self, ab, curve=True)
        if ab.layers is not None:
            raise MatchsigError(f"layer curve of {ab.name}: give the directions and heads only, the layers vary")
        enc = encoded if encoded is not None else self.encode(queries, documents)
        n, nl = len(enc), self.num_layers
        out = np.zeros((nl, n), dtype=np.float64)
        if n == 0:
            return out
        all_blocks = self._block_tensors([ab])[0]
        bar = _progress(n * nl, progress, f"layers {ab.name}")
        with torch.inference_mode():
            for batch in self.padded_batches(enc, batch_size):
                res = self.forward(batch, blocks=all_blocks, kernel=kernel, output_hidden_states=True)
                out[nl - 1, batch.rows] = self.scores_from_logits(res.logits)
                hidden = res.hidden_states  # hidden[l + 1] = output of layer l
                for layer in range(nl - 1):
                    logits = self.forward(batch, kernel=kernel, start=(layer + 1, hidden[layer + 1])).logits
                    out[layer, batch.rows] = self.scores_from_logits(logits)
                bar.update(len(batch) * nl)
        bar.close()
        return out

    def _encoder_layers(self) -> tuple[nn.Module, str, nn.ModuleList]:
        """The module holding the layer list, the list's attribute name, and the list."""
        if getattr(self, "_layers_cache", None) is None:
            targets = {id(m) for m in self.attention_modules}
            for mod in self.model.modules():
                for attr, child in mod.named_children():
                    if isinstance(child, nn.ModuleList) and len(child) == self.num_layers:
                        owners = [{id(x) for x in layer.modules()} & targets for layer in child]
                        if all(len(o) == 1 for o in owners):
                            self._layers_cache = (mod, attr, child)
                            return self._layers_cache
            raise MatchsigError(f"model {self.name}: cannot find its list of encoder layers for prefix sharing")
        return self._layers_cache

    @contextlib.contextmanager
    def _start_at(self, first_layer: int, hidden: torch.Tensor) -> Iterator[None]:
        """Run only layers ``first_layer..``, starting from ``hidden``, inside the block."""
        encoder, attr, layers = self._encoder_layers()

        def pre(module, args, kwargs):
            if args:
                return (hidden,) + tuple(args[1:]), kwargs
            kwargs = dict(kwargs)
            kwargs["hidden_states"] = hidden
            return args, kwargs

        patch = self.family.start_patch(layers, first_layer) if self.family.start_patch else contextlib.nullcontext()
        setattr(encoder, attr, nn.ModuleList(list(layers)[first_layer:]))
        # on the first layer run, not the encoder: a family's layer list may sit in a module whose
        # forward takes token ids (ModernBERT), but every layer takes the hidden states first; prepended,
        # so that a resid_pre hook of that layer sees (and may replace) the start state
        handle = layers[first_layer].register_forward_pre_hook(pre, with_kwargs=True, prepend=True)
        try:
            with patch:
                yield
        finally:
            handle.remove()
            setattr(encoder, attr, layers)

    # ---- attention statistics ------------------------------------------------------------------
    def attention_stats(self, queries: Sequence[str], documents: Sequence[str], ablation: Ablation | str | None = None,
                        batch_size: int = 32, progress: bool = False, kernel: str = "auto") -> AttentionStats:
        """Per pair, layer and head: the statistics of :data:`matchsig.attention_stats.STATISTICS` (M,
        entropy, exact-match mass and total mass) for Q<-D and D<-Q.

        Reduced inside each layer's attention call (site ``attn.hook_stats``); no attention map is
        kept. With an ``ablation``, each layer's statistics describe its distribution before its own
        ablation. ``kernel``: as in :meth:`score` (``"eager"``: from full maps).
        """
        KERNELS.check(kernel)
        enc = self.encode(queries, documents)
        n, names = len(enc), statistic_names()
        values = np.full((n, self.num_layers, self.num_heads, len(DIRECTIONS), len(names)), np.nan, dtype=np.float32)
        if n == 0:
            return AttentionStats(values, names)
        blocks = self._block_tensors([self.ablation(ablation)])[0]
        per_layer: dict[int, torch.Tensor] = {}

        def collect(value: torch.Tensor, hook) -> None:
            per_layer[hook.layer] = value  # (B, H, directions, statistics), reduced inside the attention call

        hooks = {f"blocks.{layer}.attn.hook_stats": collect for layer in range(self.num_layers)}
        bar = _progress(n, progress, "attention statistics")
        with torch.inference_mode():
            for batch in self.padded_batches(enc, batch_size):
                self.forward(batch, blocks=blocks if any(b is not None for b in blocks) else None, hooks=hooks,
                             kernel=kernel)
                values[batch.rows] = torch.stack([per_layer[l] for l in range(self.num_layers)], 1).cpu().numpy()
                bar.update(len(batch))
        bar.close()
        return AttentionStats(values, names)

