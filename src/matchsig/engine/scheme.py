"""A model's part scheme: what its five part slots are called, which directions its masks allow, and
which part reads the relevance signal.

The engine and the experiments address parts by slot (``CLS Q SEP1 D SEP2``, :mod:`matchsig.engine.parts`);
a prompt-based reranker names the same slots ``PRE Q MID D LAST`` (decoders) or ``PRE Q MID D POST``
(monoT5, with a decoder token ``DEC`` reading the encoder by cross-attention). A run records its
scheme in ``summary.json`` (``model_info.parts``) so the tables, findings and report, which read only
run folders, label rows with the model's own names, write "impossible" where a causal mask makes a
direction impossible (``Q<-D`` when D comes after Q) and leave out claims about parts a model does not
have. Pure Python: the analysis layer reads it without torch.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .parts import PART_NAMES, DecoderPart

__all__ = ["ALL", "DEC", "ENCODER", "PartScheme"]

ALL = "*"
DEC = DecoderPart.DEC.name
_WORD = re.compile(r"[A-Za-z][A-Za-z0-9]*")


@dataclass(frozen=True)
class PartScheme:
    """``names``: the model's names of the slots ``CLS Q SEP1 D SEP2``; ``causal``: a causal mask makes a
    direction into an earlier part impossible; ``decoder``: a decoder token ``DEC`` reads the encoder
    (``DEC<-Y`` directions); ``aggregator``: the slot (or ``DEC``) the score is read from, whose ``X<-*``
    makes every score equal (``CLS`` for encoders, ``SEP2`` = ``LAST`` for decoders, ``DEC`` for monoT5)."""

    names: tuple[str, ...] = PART_NAMES
    causal: bool = False
    decoder: bool = False
    aggregator: str = "CLS"

    # ---- names ---------------------------------------------------------------------------------
    @property
    def encoder(self) -> bool:
        """Whether this is a ``[CLS] q [SEP] d [SEP]`` encoder's scheme (the paper's)."""
        return self.names == PART_NAMES and self.aggregator == "CLS" and not self.causal and not self.decoder

    def name(self, slot: str) -> str:
        """The model's name of a slot (``SEP2`` -> ``LAST``); ``*`` and ``DEC`` unchanged."""
        return self.names[PART_NAMES.index(slot)] if slot in PART_NAMES else slot

    def label(self, text: str) -> str:
        """A direction or ablation label in the model's names: ``SEP2<-Q,SEP2<-D`` -> ``LAST<-Q,LAST<-D``."""
        if self.names == PART_NAMES:
            return text
        return _WORD.sub(lambda m: self.name(m.group(0)) if m.group(0) in PART_NAMES else m.group(0), text)

    @property
    def aggregator_name(self) -> str:
        return self.name(self.aggregator)

    # ---- directions ----------------------------------------------------------------------------
    def targets(self) -> tuple[str, ...]:
        """The parts that attend: the five slots, then ``DEC`` in an encoder-decoder."""
        return PART_NAMES + ((DEC,) if self.decoder else ())

    def possible(self, target: str, source: str) -> bool:
        """Whether ``target<-source`` cuts anything: ``DEC`` is never a source, and under a causal mask a part
        never reads a later one (``X<-*`` is always possible: every part reads itself)."""
        if source == DEC or (target == DEC and not self.decoder):
            return False
        if source == ALL or target == DEC or not self.causal:
            return True
        return PART_NAMES.index(source) <= PART_NAMES.index(target)

    def table1_cells(self) -> tuple[tuple[str, str], ...]:
        """Every Table 1 cell ``(target, source)``, impossible ones included (:meth:`possible` says which), in
        the order of :data:`matchsig.engine.ablation.TABLE1_CELLS`: every ``X<-Y``, then every ``X<-*``."""
        return (tuple((x, y) for x in self.targets() for y in PART_NAMES)
                + tuple((x, ALL) for x in self.targets()))

    def computed_cells(self) -> tuple[tuple[str, str], ...]:
        """The Table 1 cells this model computes: :meth:`table1_cells` that are :meth:`possible`, in order."""
        return tuple(c for c in self.table1_cells() if self.possible(*c))

    def figure1_directions(self) -> tuple[str, ...]:
        """Figure 1's up-to-layer directions: X<-Y for X, Y in {aggregator, Q, D} where possible, then
        aggregator<-{Q,D} and aggregator<-* (the paper's CLS rows; ``DEC`` has no layer curve: its
        cross-attention runs after the whole encoder, so an encoder-decoder's curves are Q and D only)."""
        agg = self.aggregator if self.aggregator in PART_NAMES else None
        parts = ((agg,) if agg else ()) + ("Q", "D")
        order = [p for p in PART_NAMES if p in parts]  # the paper's order, CLS first
        out = [f"{x}<-{y}" for x in order for y in order if self.possible(x, y)]
        if agg:
            out += [f"{agg}<-Q,{agg}<-D", f"{agg}<-*"]
        return tuple(out)

    # ---- summary.json --------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {"names": list(self.names), "causal": self.causal, "decoder": self.decoder,
                "aggregator": self.aggregator}

    @classmethod
    def from_dict(cls, data: dict | None) -> "PartScheme":
        """The scheme a run recorded; runs made before schemes were recorded are encoders."""
        if not data:
            return ENCODER
        names = tuple(data.get("names") or PART_NAMES)
        if len(names) != len(PART_NAMES):
            names = PART_NAMES
        return cls(names, bool(data.get("causal", False)), bool(data.get("decoder", False)),
                   str(data.get("aggregator") or "CLS"))


ENCODER = PartScheme()
