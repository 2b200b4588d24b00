"""Attention-direction ablations as immutable values, and the one vocabulary of directions.

An :class:`Ablation` names the directions ``X<-Y`` to cut (the attention tokens of X pay to tokens of
Y is set to 0 after the softmax, without renormalising the row), the layers and the heads where the
cut applies. It is a plain value: hashable, comparable, printable, independent of any model; the
model's sizes are checked when it is used (:meth:`Ablation.block_masks`).

The text form is one grammar, read by :meth:`Ablation.parse` and written by ``str()``::

    DIRECTIONS[@L<layers>][/H<heads>]       e.g.  D<-D   CLS<-*@L0-5   Q<-D,D<-Q@L3/H0,5

``DIRECTIONS`` is a comma list of ``TARGET<-SOURCE`` where a part is ``CLS``, ``Q``, ``SEP1``, ``D``,
``SEP2`` or ``*`` (all five); ``X<-{A,B}`` (or ``X<-A|B``) cuts several sources into one target and a
bare source continues the last target (``CLS<-Q,D`` is ``CLS<-Q,CLS<-D``). ``<layers>`` and ``<heads>``
are comma lists of integers or ranges ``a-b``. An :class:`AblationSet` is its members joined by `` + ``.
:func:`direction_cells` and :func:`direction_label` read the same direction texts without the model's
part checks (they keep ``*`` as a source), for labels of result tables.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterable

import numpy as np

from ..errors import MatchsigError
from .parts import PAD, PART_NAMES, PARTS, Part, parse_part

ARROW = "<-"
#: A source (or target) meaning all five parts.
ALL = "*"
#: Separator of the members of an :class:`AblationSet` in its text form.
SET_SEPARATOR = " + "
#: Separator of a labelled :class:`AblationSet`'s label and members in its text form (``top3 = Q<-D@L1/H3 + ...``).
LABEL_SEPARATOR = " = "

#: Table 1: the 25 directions X<-Y, then the 5 X<-* ("All"), as (target, source).
TABLE1_CELLS: tuple[tuple[str, str], ...] = tuple((x, y) for x in PART_NAMES for y in PART_NAMES) + tuple(
    (x, ALL) for x in PART_NAMES
)
#: The 31 configurations of Table 1: the unablated model (``none``), 25 ``X<-Y`` and 5 ``X<-*``.
TABLE1_ABLATIONS: tuple[str, ...] = ("none",) + tuple(f"{x}{ARROW}{y}" for x, y in TABLE1_CELLS)
#: Figure 1: X<-Y for X, Y in {CLS, Q, D}, CLS<-{Q, D} and CLS<-*.
FIGURE1_DIRECTIONS: tuple[str, ...] = tuple(f"{x}<-{y}" for x in ("CLS", "Q", "D") for y in ("CLS", "Q", "D")) + (
    "CLS<-Q,CLS<-D",
    "CLS<-*",
)
#: The order of sources in labels: the five parts, then ``*`` (Table 1's columns).
_SOURCE_ORDER = {name: i for i, name in enumerate(PART_NAMES + (ALL,))}

_BRACES = re.compile(r"\{([^}]*)\}")
_SUFFIX = re.compile(r"^(?P<directions>[^@/]*)(?:@L(?P<layers>[^/]*))?(?:/H(?P<heads>.*))?$", re.IGNORECASE | re.DOTALL)


class AblationSpecError(MatchsigError, ValueError):
    """A bad ablation spec: a one-line :class:`MatchsigError` (CLI exit code 2) that is also a ``ValueError``."""


# ---- the direction vocabulary -------------------------------------------------------------------


def _direction_tokens(text: str) -> list[str]:
    """Split a directions text into ``TARGET<-SOURCE[|SOURCE...]`` tokens, spaces kept.

    Commas inside braces separate sources (``CLS<-{Q,D}`` -> ``CLS<-Q|D``); a token without an arrow
    continues the target of the last token that named one (``CLS<-Q,D``). A bare token with no target
    before it is returned as is (the caller decides whether that is an error).
    """
    text = _BRACES.sub(lambda m: m.group(1).replace(",", "|"), str(text).strip())
    out: list[str] = []
    last_target = None
    for token in text.split(","):
        token = token.strip()
        if not token:
            continue
        if ARROW not in token and last_target:
            token = f"{last_target}{ARROW}{token}"
        cells = _token_cells(token)
        if cells:
            last_target = cells[0][0]
        out.append(token)
    return out


def _token_cells(token: str) -> list[tuple[str, str]]:
    """``"cls<-q|d"`` -> ``[("CLS", "Q"), ("CLS", "D")]``: names upper-cased, not checked; [] without an arrow."""
    token = token.strip().replace(" ", "")
    if ARROW not in token:
        return []
    target, source = token.split(ARROW, 1)
    return [(target.upper(), s.upper()) for s in source.split("|") if s]


def direction_cells(text: str) -> frozenset[tuple[str, str]]:
    """The (target, source) name pairs a directions text names, ``*`` kept as ``*``.

    ``"CLS<-Q,CLS<-D"``, ``"CLS<-{Q,D}"`` and ``"cls<-q,d"`` all give ``{("CLS","Q"), ("CLS","D")}``;
    ``"CLS<-*"`` gives ``{("CLS","*")}``. Part names are not checked (a label read from a table is
    compared, not run): use :meth:`Ablation.parse` to validate a spec.
    """
    return frozenset(cell for token in _direction_tokens(text) for cell in _token_cells(token))


def direction_label(text: str) -> str:
    """A compact label: ``CLS<-{Q,D}`` for several sources into one target, else ``text`` unchanged."""
    cells = direction_cells(text)
    targets = {t for t, _ in cells}
    if len(cells) > 1 and len(targets) == 1:
        sources = sorted((s for _, s in cells), key=lambda s: (_SOURCE_ORDER.get(s, len(_SOURCE_ORDER)), s))
        return f"{next(iter(targets))}{ARROW}{{{','.join(sources)}}}"
    return str(text)


def _parse_side(token: str) -> tuple[Part, ...]:
    token = token.strip()
    if token == ALL:
        return PARTS
    try:
        return (parse_part(token),)
    except ValueError as exc:
        raise AblationSpecError(str(exc)) from None


def _parse_directions(text: str) -> frozenset[tuple[Part, Part]]:
    """Directions of a spec without its layer/head suffix; raises :class:`AblationSpecError`."""
    if text.strip().lower() == "none":
        return frozenset()
    directions: set[tuple[Part, Part]] = set()
    for token in _direction_tokens(text):
        compact = token.replace(" ", "")
        if compact.count(ARROW) != 1:
            raise AblationSpecError(
                f"bad direction {token!r}: expected TARGET<-SOURCE with parts CLS, Q, SEP1, D, SEP2 or *"
            )
        target, sources = compact.split(ARROW)
        for x in _parse_side(target):
            for source in sources.split("|"):
                for y in _parse_side(source):
                    directions.add((x, y))
    return frozenset(directions)


def _int_list(text: str, what: str, spec: str) -> tuple[int, ...]:
    """``"0-2,5"`` -> (0, 1, 2, 5); ``""`` -> () (nothing)."""
    out: set[int] = set()
    for item in (t.strip() for t in text.split(",")):
        if not item:
            continue
        low, dash, high = item.partition("-")
        if not (low.isdigit() and (not dash or high.isdigit())) or (dash and int(high) < int(low)):
            raise AblationSpecError(f"bad {what} {item!r} in ablation spec {spec!r}: expected integers or ranges like 0-5")
        out.update(range(int(low), int(high if dash else low) + 1))
    return tuple(sorted(out))


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


def _spec_text(directions: str) -> str:
    """The display form of a directions text: upper case, no spaces, empty items dropped."""
    if directions.strip().lower() == "none":
        return "none"
    return ",".join(t.replace(" ", "").upper() for t in directions.split(",") if t.strip()) or "none"


def _split_spec(spec: str) -> tuple[str, tuple[int, ...] | None, tuple[int, ...] | None]:
    """``"Q<-D@L3/H0,5"`` -> ``("Q<-D", (3,), (0, 5))``; a part left out is ``None`` (all)."""
    match = _SUFFIX.match(spec.strip())
    if match is None:
        raise AblationSpecError(f"bad ablation spec {spec!r}: expected DIRECTIONS[@L<layers>][/H<heads>], e.g. Q<-D@L3/H0,5")
    layers, heads = match.group("layers"), match.group("heads")
    return (
        match.group("directions"),
        None if layers is None else _int_list(layers, "layers", spec),
        None if heads is None else _int_list(heads, "heads", spec),
    )


def _range_text(values: tuple[int, ...]) -> str:
    """(0, 1, 2) -> ``0-2``; anything else as a comma list."""
    if len(values) > 1 and values == tuple(range(values[0], values[-1] + 1)):
        return f"{values[0]}-{values[-1]}"
    return ",".join(map(str, values))


@dataclass(frozen=True)
class Ablation:
    """A set of attention directions cut in some layers and heads.

    ``directions``: pairs ``(target, source)``, i.e. ``X<-Y`` is ``(X, Y)``.
    ``layers``/``heads``: sorted tuples, or ``None`` for all of them.
    ``Ablation.parse(str(a)) == a`` for every ablation.
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
        """Parse ``"D<-D"``, ``"CLS<-*"``, ``"Q<-D,D<-Q"``, ``"Q<-D@L3/H0,5"`` (parts are case-insensitive).

        ``layers``: the layers to ablate (default all); ``up_to_layer=l`` means layers ``0..l``.
        ``heads``: the heads to ablate in those layers (default all). Layers and heads may instead be
        written in the spec (``@L0-5``, ``/H0,5``), not both.
        ``"none"`` is the empty ablation; an empty spec is an error (it is more often a lost value than
        a wish for no ablation). A bad spec raises :class:`AblationSpecError` (a ``MatchsigError`` and a
        ``ValueError``) naming the bad token and listing the valid parts.
        """
        if not isinstance(spec, str):
            raise AblationSpecError(f"ablation spec must be a string like 'D<-D', got {type(spec).__name__}")
        if not [t for t in spec.split(",") if t.strip()]:
            raise AblationSpecError(f"empty ablation spec {spec!r}: give directions like 'D<-D', or 'none' for no ablation")
        text, spec_layers, spec_heads = _split_spec(spec)
        if not text.strip():
            raise AblationSpecError(f"ablation spec {spec!r} has no directions: give directions like 'D<-D', or 'none'")
        if up_to_layer is not None:
            if layers is not None:
                raise AblationSpecError("give either layers or up_to_layer, not both")
            if int(up_to_layer) < 0:
                raise AblationSpecError(f"up_to_layer must be >= 0, got {up_to_layer}")
            layers = range(int(up_to_layer) + 1)
        for written, given, what in ((spec_layers, layers, "layers"), (spec_heads, heads, "heads")):
            if written is not None and given is not None:
                raise AblationSpecError(f"ablation spec {spec!r} names its {what}: do not give {what} as well")
        return cls(
            _parse_directions(text),
            spec_layers if spec_layers is not None else _ints(layers, "layers"),
            spec_heads if spec_heads is not None else _ints(heads, "heads"),
            spec=_spec_text(text),
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
        """A short readable name that :meth:`parse` reads back, e.g. ``D<-D``, ``CLS<-*@L0-5``, ``Q<-D@L3/H0,5``."""
        out = self.spec or ",".join(f"{x.name}<-{y.name}" for x, y in sorted(self.directions)) or "none"
        if self.layers is not None:
            out += "@L" + _range_text(self.layers)
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
        is_set = SET_SEPARATOR.strip() in value or LABEL_SEPARATOR in value
        return AblationSet.parse(value) if is_set else Ablation.parse(value)
    raise AblationSpecError(f"expected an Ablation or a spec string, got {type(value).__name__}")


@dataclass(frozen=True)
class AblationSet:
    """The union of several ablations (e.g. Q<-D,D<-Q in head 3 of layer 1 *and* head 7 of layer 4).

    Usable wherever an :class:`Ablation` is: its cut blocks are the OR of its members'.
    """

    members: tuple[Ablation, ...]
    label: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        # A member that cuts nothing anywhere changes no block; dropping it lets equal sets print equally.
        object.__setattr__(self, "members", tuple(m for m in self.members if m != Ablation.none()))

    @classmethod
    def parse(cls, text: str, label: str = "") -> "AblationSet":
        """Read the text form ``str()`` writes: members joined by `` + `` (``"none"``: no member), after
        ``label = `` for a labelled set; ``AblationSet.parse(str(s))`` equals ``s`` and has its label.
        A ``label`` given here wins over one in the text."""
        if not isinstance(text, str):
            raise AblationSpecError(f"ablation set must be a string like 'Q<-D@L1/H3 + Q<-D@L4/H7', got {type(text).__name__}")
        if LABEL_SEPARATOR in text:
            written, text = text.rsplit(LABEL_SEPARATOR, 1)
            label = label or written.strip()
        if text.strip().lower() == "none":
            return cls((), label)
        return cls(tuple(Ablation.parse(member) for member in text.split(SET_SEPARATOR.strip())), label)

    @classmethod
    def heads(cls, spec: str, heads: Iterable[tuple[int, int]], label: str = "") -> "AblationSet":
        """Cut ``spec``'s directions in the given (layer, head) pairs only."""
        members = tuple(Ablation.parse(spec, layers=[l], heads=[h]) for l, h in sorted(set(heads)))
        return cls(members, label)

    @property
    def is_empty(self) -> bool:
        return all(m.is_empty for m in self.members)

    @property
    def text(self) -> str:
        """The text form :meth:`parse` reads back, whatever the label."""
        return SET_SEPARATOR.join(m.name for m in self.members) or "none"

    @property
    def name(self) -> str:
        """The label if there is one, else :attr:`text`."""
        return self.label or self.text

    def __str__(self) -> str:
        """The text form :meth:`parse` reads back, label included (``top3 = Q<-D@L1/H3 + ...``)."""
        return f"{self.label}{LABEL_SEPARATOR}{self.text}" if self.label else self.text

    def block_masks(self, num_layers: int, num_heads: int) -> list[np.ndarray | None]:
        out: list[np.ndarray | None] = [None] * num_layers
        for member in self.members:
            for layer, m in enumerate(member.block_masks(num_layers, num_heads)):
                if m is not None:
                    out[layer] = m.copy() if out[layer] is None else (out[layer] | m)
        return out
