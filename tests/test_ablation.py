"""The direction vocabulary of ablation.py: text form round trips and agreement with the older readers.

Random ablations come from a seeded generator (no property-testing library is a dependency): each
test draws a few hundred values, so a failure names a reproducible case.
"""

from __future__ import annotations

import random
import re

import pytest

from matchsig.engine.ablation import (
    FIGURE1_DIRECTIONS,
    TABLE1_ABLATIONS,
    TABLE1_CELLS,
    Ablation,
    AblationSet,
    AblationSpecError,
    as_ablation,
    direction_cells,
    direction_label,
)
from matchsig.errors import MatchsigError
from matchsig.engine.parts import PART_NAMES, Part

NAMES = list(PART_NAMES)
CASES = 400


def _int_set(rng: random.Random, top: int) -> tuple[int, ...] | None:
    """None (all), the empty tuple, a contiguous range, a single value or a scattered set."""
    kind = rng.randrange(5)
    if kind == 0:
        return None
    if kind == 1:
        return ()
    if kind == 2:
        a = rng.randrange(top)
        return tuple(range(a, rng.randrange(a, top) + 1))
    return tuple(sorted(rng.sample(range(top), rng.randrange(1, 5))))


def _direction_text(rng: random.Random, garbage: bool = False) -> str:
    """A directions text in any accepted spelling: case, spaces, *, braces, pipes, bare continuation."""
    tokens = []
    for _ in range(rng.randrange(1, 5)):
        parts = NAMES + ["*"] + (["FOO", "", "q->d"] if garbage else [])
        target = rng.choice(parts)
        sources = rng.sample(parts, rng.randrange(1, 3))
        spell = rng.randrange(4)
        if spell == 0 or len(sources) == 1:
            token = f"{target}<-{sources[0]}" + "".join(f",{s}" for s in sources[1:])  # bare continuation
        elif spell == 1:
            token = f"{target}<-{{{', '.join(sources)}}}"
        elif spell == 2:
            token = f"{target}<-{'|'.join(sources)}"
        else:
            token = ",".join(f"{target}<-{s}" for s in sources)
        if rng.random() < 0.3:
            token = token.lower()
        if rng.random() < 0.3:
            token = token.replace("<-", " <- ")
        tokens.append(token)
    if garbage and rng.random() < 0.3:
        tokens.insert(rng.randrange(len(tokens) + 1), rng.choice(["", " ", "D", "Q->D", "<-Q", "CLS<-"]))
    return rng.choice([",", ", "]).join(tokens)


def _random_ablation(rng: random.Random) -> Ablation:
    layers, heads = _int_set(rng, 24), _int_set(rng, 16)
    if rng.random() < 0.5:  # built from a text (its spec is kept for printing)
        text = "none" if rng.random() < 0.1 else _direction_text(rng)
        return Ablation.parse(text, layers=layers, heads=heads)
    pairs = [(x, y) for x in Part for y in Part]
    return Ablation(frozenset(rng.sample(pairs, rng.randrange(0, 8))), layers, heads)


def test_parse_reads_back_what_str_writes_for_every_ablation():
    rng = random.Random(13)
    for _ in range(CASES):
        ab = _random_ablation(rng)
        text = str(ab)
        again = Ablation.parse(text)
        assert again == ab, text
        assert str(again) == text and as_ablation(text) == ab


def test_parse_reads_back_ablation_sets():
    rng = random.Random(5)
    for _ in range(CASES // 4):
        members = tuple(_random_ablation(rng) for _ in range(rng.randrange(1, 4)))
        members = tuple(m for m in members if m != Ablation.none()) or (Ablation.parse("Q<-D", layers=[1], heads=[2]),)
        ab_set = AblationSet(members, label=rng.choice(["", "top3"]))
        assert AblationSet.parse(ab_set.text) == ab_set, ab_set.text
        if len(members) > 1:
            assert as_ablation(ab_set.text) == ab_set
    heads = AblationSet.heads("Q<-D,D<-Q", [(4, 7), (1, 3)], label="top2")
    assert heads.text == "Q<-D,D<-Q@L1/H3 + Q<-D,D<-Q@L4/H7" and heads.name == "top2"
    assert AblationSet.parse(heads.text) == heads and AblationSet.parse("none") == AblationSet(())


def test_str_of_an_ablation_set_round_trips_with_its_label():
    rng = random.Random(11)
    for _ in range(CASES // 4):
        members = tuple(m for m in (_random_ablation(rng) for _ in range(rng.randrange(1, 4))) if m != Ablation.none())
        for label in ("", "top3", "k = 4 random"):
            ab_set = AblationSet(members, label=label)
            again = AblationSet.parse(str(ab_set))
            assert again == ab_set and again.label == label and str(again) == str(ab_set), str(ab_set)
            if label or len(members) > 1:  # an unlabelled one-member set reads as that Ablation
                assert as_ablation(str(ab_set)) == ab_set and as_ablation(str(ab_set)).label == label
    heads = AblationSet.heads("Q<-D,D<-Q", [(4, 7), (1, 3)], label="top2")
    assert str(heads) == "top2 = Q<-D,D<-Q@L1/H3 + Q<-D,D<-Q@L4/H7" and heads.name == "top2"
    single = AblationSet.heads("Q<-D", [(0, 1)], label="one head")
    assert AblationSet.parse(str(single)).label == "one head" and as_ablation(str(single)) == single
    assert str(AblationSet((), label="empty")) == "empty = none" and AblationSet.parse("empty = none").label == "empty"
    assert AblationSet.parse("top2 = Q<-D@L1/H3", label="mine").label == "mine"  # a label given wins


def test_named_examples():
    """The issue's example, and each kind of suffix, written out (not through the code under test)."""
    ab = Ablation.parse("Q<-D@L3/H0,5")
    assert ab.directions == {(Part.Q, Part.D)} and ab.layers == (3,) and ab.heads == (0, 5)
    assert str(ab) == "Q<-D@L3/H0,5"
    assert Ablation.parse("cls<-*@L0-5").layers == (0, 1, 2, 3, 4, 5)
    assert str(Ablation.parse("CLS<-*", up_to_layer=5)) == "CLS<-*@L0-5"
    assert Ablation.parse("D<-D/H2").layers is None and Ablation.parse("D<-D/H2").heads == (2,)
    assert Ablation.parse("D<-D@L0-2,7").layers == (0, 1, 2, 7)
    assert str(Ablation.parse("D<-D@L1,3")) == "D<-D@L1,3"
    assert Ablation.parse("D<-D@L/H").is_empty and str(Ablation(frozenset(), (3,))) == "none@L3"
    assert Ablation.parse("CLS<-{Q,D}") == Ablation.parse("CLS<-Q,CLS<-D") == Ablation.parse("cls<-q,d")


@pytest.mark.parametrize(
    "spec, message",
    [
        ("D<-D@Lx", "bad layers 'x'"),
        ("D<-D@L5-3", "bad layers '5-3'"),
        ("D<-D/H-1", "bad heads '-1'"),
        ("D<-D@3", "expected DIRECTIONS[@L<layers>][/H<heads>]"),
        ("@L3", "has no directions"),
        ("D<-D,Q->D", "unknown part 'Q->D'"),
        ("Q->D", "TARGET<-SOURCE"),
        ("CLS<-{Q,DOC}", "unknown part 'DOC'"),
    ],
)
def test_bad_specs_give_one_line_errors(spec, message):
    with pytest.raises(AblationSpecError, match=re.escape(message)) as info:
        Ablation.parse(spec)
    assert isinstance(info.value, MatchsigError) and "\n" not in str(info.value)


def test_layers_in_the_spec_and_as_arguments_conflict():
    with pytest.raises(AblationSpecError, match="names its layers"):
        Ablation.parse("D<-D@L3", layers=[1])
    with pytest.raises(AblationSpecError, match="names its heads"):
        Ablation.parse("D<-D/H3", heads=[1])
    with pytest.raises(AblationSpecError, match="names its layers"):
        Ablation.parse("D<-D@L3", up_to_layer=2)


def _expand_star(cells: frozenset[tuple[str, str]]) -> set[tuple[Part, Part]]:
    out = set()
    for x, y in cells:
        for xx in NAMES if x == "*" else [x]:
            for yy in NAMES if y == "*" else [y]:
                out.add((Part[xx], Part[yy]))
    return out


def test_direction_cells_name_what_parse_cuts():
    rng = random.Random(7)
    for _ in range(CASES):
        text = _direction_text(rng)
        assert Ablation.parse(text).directions == _expand_star(direction_cells(text)), text


def _reference_cells(text: str) -> frozenset:
    """An independent reading of a directions text (the reader findings.py had before the vocabulary
    moved to ablation.py): braces turn commas into source lists, a bare source continues the last target."""
    text = re.sub(r"\{([^}]*)\}", lambda m: m.group(1).replace(",", "|"), str(text).strip())
    out, last = [], None
    for token in text.split(","):
        token = token.strip().replace(" ", "")
        if not token:
            continue
        if "<-" not in token and last:
            token = f"{last}<-{token}"
        if "<-" not in token:
            continue
        target, source = token.split("<-", 1)
        cells = [(target.upper(), s.upper() if s != "*" else "*") for s in source.split("|") if s]
        if cells:
            last = cells[0][0]
        out.extend(cells)
    return frozenset(out)


def _reference_label(text: str) -> str:
    cells = _reference_cells(text)
    order = ["CLS", "Q", "SEP1", "D", "SEP2", "*"]
    if len(cells) > 1 and len({t for t, _ in cells}) == 1:
        sources = sorted((s for _, s in cells), key=lambda s: order.index(s) if s in order else 99)
        return f"{next(iter(cells))[0]}<-{{{','.join(sources)}}}"
    return str(text)


def test_direction_cells_and_label_agree_with_an_independent_reader():
    rng = random.Random(11)
    for _ in range(CASES):
        text = _direction_text(rng, garbage=True)
        assert direction_cells(text) == _reference_cells(text), text
        clean = _direction_text(rng)
        assert direction_label(clean) == _reference_label(clean), clean
    for text in (*FIGURE1_DIRECTIONS, *TABLE1_ABLATIONS, "CLS<-{Q,D}", "cls<-*", "", "nonsense"):
        assert direction_cells(text) == _reference_cells(text) and direction_label(text) == _reference_label(text)
    assert direction_label("CLS<-D,CLS<-Q") == "CLS<-{Q,D}" and direction_cells("cls<-*") == {("CLS", "*")}


def test_table_and_figure_lists():
    assert len(TABLE1_CELLS) == 30 and len(set(TABLE1_CELLS)) == 30
    assert TABLE1_ABLATIONS[0] == "none" and TABLE1_ABLATIONS[1:] == tuple(f"{x}<-{y}" for x, y in TABLE1_CELLS)
    assert {y for _, y in TABLE1_CELLS} == {"CLS", "Q", "SEP1", "D", "SEP2", "*"}
    assert len(FIGURE1_DIRECTIONS) == 11 and "CLS<-*" in FIGURE1_DIRECTIONS
    for spec in (*TABLE1_ABLATIONS, *FIGURE1_DIRECTIONS):
        Ablation.parse(spec)


def test_the_lists_are_defined_once():
    """experiments and explorer use ablation.py's lists, not copies."""
    from matchsig.report import explorer
    from matchsig.analysis import paper
    from matchsig.experiments import layers
    from matchsig.experiments.table1 import tables

    assert tables.TABLE1_CELLS is TABLE1_CELLS and layers.FIGURE1_DIRECTIONS is FIGURE1_DIRECTIONS
    assert explorer.TABLE1_ABLATIONS is TABLE1_ABLATIONS
    assert paper.PARTS == PART_NAMES == ("CLS", "Q", "SEP1", "D", "SEP2")
