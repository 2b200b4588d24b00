"""Attention-direction ablations as immutable values.

An :class:`Ablation` names the directions ``X<-Y`` to cut (the attention tokens of X pay to tokens of
Y is set to 0 after the softmax, without renormalising the row), the layers and the heads where the
cut applies. It is a plain value: hashable, comparable, printable, independent of any model; the
model's sizes are checked when it is used (:meth:`Ablation.block_masks`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

import numpy as np

from .errors import MatchsigError
from .parts import PAD, PARTS, Part, parse_part

ARROW = "<-"


class AblationSpecError(MatchsigError, ValueError):
    """A bad ablation spec: a one-line :class:`MatchsigError` (CLI exit code 2) that is also a ``ValueError``."""


def _parse_side(token: str) -> tuple[Part, ...]:
    token = token.strip()
    if token == "*":
        return PARTS
    try:
        return (parse_part(token),)
    except ValueError as exc:
        raise AblationSpecError(str(exc)) from None


def _ints(values: Iterable[int] | None, what: str) -> tuple[int, ...] | None:
    if values is None:
        return None
    try:
        out = tuple(sorted({int(v) for v in values}))
    except (TypeError, ValueError):
        raise AblationSpecError(f"{what} must be integers, got {values!r}") from None
    if any(v < 0 for v in out):
        raise AblationSpecError(f"{what} must be >= 0, got {list(out)}")
    return out


@dataclass(frozen=True)
class Ablation:
    """A set of attention directions cut in some layers and heads.

    ``directions``: pairs ``(target, source)``, i.e. ``X<-Y`` is ``(X, Y)``.
    ``layers``/``heads``: sorted tuples, or ``None`` for all of them.
    """

    directions: frozenset[tuple[Part, Part]]
    layers: tuple[int, ...] | None = None
    heads: tuple[int, ...] | None = None
    spec: str = field(default="", compare=False)

    # ---- construction --------------------------------------------------------------------------
    @classmethod
    def parse(
        cls,
        spec: str,
        layers: Iterable[int] | None = None,
        heads: Iterable[int] | None = None,
        up_to_layer: int | None = None,
    ) -> "Ablation":
        """Parse ``"D<-D"``, ``"CLS<-*"``, ``"Q<-D,D<-Q"`` (parts are case-insensitive).

        ``layers``: the layers to ablate (default all); ``up_to_layer=l`` means layers ``0..l``.
        ``heads``: the heads to ablate in those layers (default all).
        ``"none"`` is the empty ablation; an empty spec is an error (it is more often a lost value than
        a wish for no ablation). A bad spec raises :class:`AblationSpecError` (a ``MatchsigError`` and a
        ``ValueError``) naming the bad token and listing the valid parts.
        """
        if not isinstance(spec, str):
            raise AblationSpecError(f"ablation spec must be a string like 'D<-D', got {type(spec).__name__}")
        if up_to_layer is not None:
            if layers is not None:
                raise AblationSpecError("give either layers or up_to_layer, not both")
            if int(up_to_layer) < 0:
                raise AblationSpecError(f"up_to_layer must be >= 0, got {up_to_layer}")
            layers = range(int(up_to_layer) + 1)
        directions: set[tuple[Part, Part]] = set()
        tokens = [t.strip() for t in spec.split(",") if t.strip()]
        if not tokens:
            raise AblationSpecError(f"empty ablation spec {spec!r}: give directions like 'D<-D', or 'none' for no ablation")
        if spec.strip().lower() == "none":
            tokens = []
        for token in tokens:
            if token.count(ARROW) != 1:
                raise AblationSpecError(
                    f"bad direction {token!r}: expected TARGET<-SOURCE with parts CLS, Q, SEP1, D, SEP2 or *"
                )
            target, source = token.split(ARROW)
            for x in _parse_side(target):
                for y in _parse_side(source):
                    directions.add((x, y))
        return cls(
            frozenset(directions),
            _ints(layers, "layers"),
            _ints(heads, "heads"),
            spec=",".join(t.replace(" ", "").upper() for t in tokens) or "none",
        )

    @classmethod
    def none(cls) -> "Ablation":
        """The empty ablation: the unmodified model."""
        return cls(frozenset(), spec="none")

    def with_layers(self, layers: Iterable[int] | None) -> "Ablation":
        """The same directions and heads in other layers."""
        return Ablation(self.directions, _ints(layers, "layers"), self.heads, self.spec)

    # ---- views ---------------------------------------------------------------------------------
    @property
    def is_empty(self) -> bool:
        return not self.directions or self.layers == () or self.heads == ()

    @property
    def name(self) -> str:
        """A short readable name, e.g. ``D<-D`` or ``CLS<-*@L0-5`` or ``Q<-D@L3/H0,5``."""
        out = self.spec or ",".join(f"{x.name}<-{y.name}" for x, y in sorted(self.directions))
        if self.layers is not None:
            ls = self.layers
            contiguous = ls and ls == tuple(range(ls[0], ls[-1] + 1)) and len(ls) > 1
            out += f"@L{ls[0]}-{ls[-1]}" if contiguous else "@L" + ",".join(map(str, ls))
        if self.heads is not None:
            out += "/H" + ",".join(map(str, self.heads))
        return out

    def __str__(self) -> str:
        return self.name

    def part_matrix(self) -> np.ndarray:
        """(6, 6) bool matrix: ``[x, y]`` True when direction x<-y is cut (row/col 5 = padding)."""
        m = np.zeros((PAD + 1, PAD + 1), dtype=bool)
        for x, y in self.directions:
            m[int(x), int(y)] = True
        return m

    def block_masks(self, num_layers: int, num_heads: int) -> list[np.ndarray | None]:
        """Per layer, a (heads, 6, 6) bool array of cut part pairs, or ``None`` where nothing is cut.

        Raises :class:`MatchsigError` when a layer or head is out of range for the model.
        """
        if self.layers is not None and self.layers and self.layers[-1] >= num_layers:
            raise MatchsigError(
                f"ablation {self.name}: layer {self.layers[-1]} is out of range, the model has "
                f"{num_layers} layers (0..{num_layers - 1})"
            )
        if self.heads is not None and self.heads and self.heads[-1] >= num_heads:
            raise MatchsigError(
                f"ablation {self.name}: head {self.heads[-1]} is out of range, the model has "
                f"{num_heads} heads per layer (0..{num_heads - 1})"
            )
        out: list[np.ndarray | None] = [None] * num_layers
        if self.is_empty:
            return out
        pm = self.part_matrix()
        block = np.zeros((num_heads, PAD + 1, PAD + 1), dtype=bool)
        for h in self.heads if self.heads is not None else range(num_heads):
            block[h] = pm
        for layer in self.layers if self.layers is not None else range(num_layers):
            out[layer] = block
        return out


def as_ablation(value: "Ablation | AblationSet | str | None") -> "Ablation | AblationSet":
    """Accept an :class:`Ablation`, an :class:`AblationSet`, a spec string or ``None`` (no ablation)."""
    if value is None:
        return Ablation.none()
    if isinstance(value, (Ablation, AblationSet)):
        return value
    if isinstance(value, str):
        return Ablation.parse(value)
    raise AblationSpecError(f"expected an Ablation or a spec string, got {type(value).__name__}")


@dataclass(frozen=True)
class AblationSet:
    """The union of several ablations (e.g. Q<-D,D<-Q in head 3 of layer 1 *and* head 7 of layer 4).

    Usable wherever an :class:`Ablation` is: its cut blocks are the OR of its members'.
    """

    members: tuple[Ablation, ...]
    label: str = field(default="", compare=False)

    @classmethod
    def heads(cls, spec: str, heads: Iterable[tuple[int, int]], label: str = "") -> "AblationSet":
        """Cut ``spec``'s directions in the given (layer, head) pairs only."""
        members = tuple(Ablation.parse(spec, layers=[l], heads=[h]) for l, h in sorted(set(heads)))
        return cls(members, label)

    @property
    def is_empty(self) -> bool:
        return all(m.is_empty for m in self.members)

    @property
    def name(self) -> str:
        return self.label or " + ".join(m.name for m in self.members) or "none"

    def __str__(self) -> str:
        return self.name

    def block_masks(self, num_layers: int, num_heads: int) -> list[np.ndarray | None]:
        out: list[np.ndarray | None] = [None] * num_layers
        for member in self.members:
            for layer, m in enumerate(member.block_masks(num_layers, num_heads)):
                if m is not None:
                    out[layer] = m.copy() if out[layer] is None else (out[layer] | m)
        return out
