"""The last bad inputs: each is a one-line error naming the problem, exit code 2, no traceback."""

from __future__ import annotations

import gzip
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from matchsig import Ablation, CrossEncoder, MatchsigError
from matchsig.cli import app, main
from matchsig.data.datasets import load_collection

SRC = Path(__file__).resolve().parents[1] / "src" / "matchsig"


def run_main(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """The console entry point in-process: (exit code, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["matchsig", *args])
    with pytest.raises(SystemExit) as info:
        main()
    out = capsys.readouterr()
    return info.value.code, out.out, out.err


def assert_one_line_error(code: int, err: str, *needles: str) -> None:
    assert code == 2, err
    assert "Traceback" not in err and err.strip().count("\n") == 0, err
    assert err.startswith("matchsig: error: "), err
    for needle in needles:
        assert needle in err, (needle, err)


def _folder(tmp_path: Path) -> Path:
    with gzip.open(tmp_path / "queries.tsv.gz", "wt", encoding="utf-8") as fh:
        fh.write("1\tfirst query\n2\tsecond query\n")
    with gzip.open(tmp_path / "qrels.txt.gz", "wt", encoding="utf-8") as fh:
        fh.write("1 0 a 2\n1 0 b 0\n2 0 c 1\n")
    with gzip.open(tmp_path / "passages.tsv.gz", "wt", encoding="utf-8") as fh:
        fh.write("a\talpha\nb\tbeta\nc\tgamma\n" + "".join(f"x{i}\tfiller passage {i}\n" for i in range(2000)))
    return tmp_path


# ---- a corrupt .gz in a collection folder -------------------------------------------------------


def test_corrupt_gz_console_one_line_exit_2(tmp_path):
    """The issue's case end to end, through the installed entry point: a truncated qrels.txt.gz."""
    folder = _folder(tmp_path)
    data = (folder / "qrels.txt.gz").read_bytes()
    (folder / "qrels.txt.gz").write_bytes(data[: len(data) // 2])  # today: "Aborted." and exit 1
    proc = subprocess.run([sys.executable, "-m", "matchsig", "baseline", "--dataset", str(folder)],
                          capture_output=True, text=True, timeout=120)
    assert proc.stdout == ""
    assert_one_line_error(proc.returncode, proc.stderr, "qrels.txt.gz", "corrupt or truncated gzip file")


@pytest.mark.parametrize("name, damage", [
    ("queries.tsv.gz", "garbage"),      # not gzip at all
    ("qrels.txt.gz", "bitflip"),        # a flipped byte in the deflate stream (CRC error)
    ("passages.tsv.gz", "truncate"),    # read lazily, when the pool needs texts
])
def test_corrupt_gz_variants(tmp_path, monkeypatch, capsys, name, damage):
    folder = _folder(tmp_path)
    path = folder / name
    data = bytearray(path.read_bytes())
    if damage == "garbage":
        data = bytearray(b"\x1f\x8b" + b"not really gzip" * 10)
    elif damage == "bitflip":
        data[len(data) // 2] ^= 0xFF
    else:
        data = data[: len(data) - 200]
    path.write_bytes(bytes(data))
    code, out, err = run_main(monkeypatch, capsys, "baseline", "--dataset", str(folder), "--per-grade", "1",
                              "--easy-negatives", "1")
    assert_one_line_error(code, err, name, "corrupt or truncated gzip file")
    with pytest.raises(MatchsigError, match=re.escape(name)):
        collection = load_collection(folder)
        collection.docs(["a"])


def test_not_utf8_text_is_one_line(tmp_path):
    folder = _folder(tmp_path)
    (folder / "queries.tsv.gz").unlink()
    (folder / "queries.tsv").write_bytes(b"1\tcaf\xe9\n")  # latin-1
    with pytest.raises(MatchsigError, match="queries.tsv: not UTF-8 text"):
        load_collection(folder)


# ---- an unavailable device ------------------------------------------------------------------------


def _unavailable_devices() -> list[str]:
    out = []
    if not torch.cuda.is_available():
        out.append("cuda")
    out.append(f"cuda:{max(torch.cuda.device_count(), 0) + 7}")  # an index past the last GPU
    return out


@pytest.mark.parametrize("device", _unavailable_devices())
def test_unavailable_device_is_one_line(monkeypatch, capsys, tmp_path, device):
    with pytest.raises(MatchsigError, match=f"device '{re.escape(device)}' is not available"):
        CrossEncoder.load("embedded", device=device)
    for args in (["evaluate", "--model", "embedded", "--device", device],
                 ["ablate", "--model", "embedded", "--device", device, "--out", str(tmp_path / "run")],
                 ["view", "--query", "q", "--document", "d", "--device", device, "--out", str(tmp_path / "v.html")]):
        code, out, err = run_main(monkeypatch, capsys, *args)
        assert_one_line_error(code, err, f"device '{device}' is not available on this machine")
    assert not (tmp_path / "run").exists()  # refused before a run folder is written


def test_unknown_device_name_is_one_line():
    with pytest.raises(MatchsigError, match="unknown device 'gpu0'"):
        CrossEncoder.load("embedded", device="gpu0")


# ---- ablation specs ---------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", ["", "   ", ",", " , "])
def test_empty_ablation_spec_is_an_error(spec):
    with pytest.raises(MatchsigError, match="empty ablation spec.*'none' for no ablation"):
        Ablation.parse(spec)
    with pytest.raises(ValueError):  # still a ValueError for callers that catch that
        Ablation.parse(spec)


def test_none_is_the_explicit_empty_ablation():
    for spec in ("none", "NONE", " none "):
        ab = Ablation.parse(spec)
        assert ab.is_empty and ab.name == "none" and ab == Ablation.none()


def test_bad_specs_are_matchsig_errors():
    for spec, message in (("Q<-DOC", "unknown part 'DOC'"), ("Q->D", "TARGET<-SOURCE"), ("D<-D,", None)):
        if message is None:
            assert Ablation.parse(spec) == Ablation.parse("D<-D")  # a trailing comma is harmless
            continue
        with pytest.raises(MatchsigError, match=re.escape(message)):
            Ablation.parse(spec)
    with pytest.raises(MatchsigError, match="heads must be >= 0"):
        Ablation.parse("D<-D", heads=[-1])


def test_no_package_caller_passes_an_empty_spec():
    """Every built-in list of ablations parses (an empty string among them would now fail loudly)."""
    from matchsig.experiments import FIGURE1_DIRECTIONS, MATCH_SPEC, TABLE1_CELLS
    from matchsig.report.explorer import TABLE1_ABLATIONS

    for spec in (*TABLE1_ABLATIONS, *FIGURE1_DIRECTIONS, MATCH_SPEC, *(f"{x}<-{y}" for x, y in TABLE1_CELLS)):
        Ablation.parse(spec)


# ---- --help shows flags as flags -------------------------------------------------------------------


def _commands() -> list[str]:
    import typer

    group = typer.main.get_command(app)
    return sorted(group.commands) if hasattr(group, "commands") else []


def test_help_shows_plain_flags():
    runner = CliRunner()
    commands = _commands()
    assert {"ablate", "layers", "contrast", "heads", "experiments", "run", "report", "demo", "view", "train",
            "baseline", "evaluate", "parts"} <= set(commands)
    seen = set()
    for args in ([], *([c] for c in commands)):
        res = runner.invoke(app, [*args, "--help"], terminal_width=200, env={"COLUMNS": "200"})
        assert res.exit_code == 0, res.output
        assert "<bool>" not in res.output, (args, res.output)
        assert re.search(r"--help\s+Show this message", res.output), (args, res.output)
        for flag in ("--force", "--json"):
            match = re.search(rf"{flag}\s+(\S+)", res.output)
            if match:
                seen.add(flag)
                assert not match.group(1).startswith("<"), (args, flag, match.group(0))
    assert seen == {"--force", "--json"}


def test_flags_take_no_value(tmp_path):
    res = CliRunner().invoke(app, ["baseline", "--json=yes"])
    assert res.exit_code != 0 and "does not take a value" in res.output


# ---- caches and checkpoints are read as plain tensors -----------------------------------------------


class _Payload:
    """Unpickling this would write a file: what a booby-trapped checkpoint could do."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (Path(self.marker), "code ran"))


def test_checkpoint_that_would_run_code_is_refused(tmp_path):
    from matchsig.training import _load_plain

    marker = tmp_path / "pwned"
    bad = tmp_path / "checkpoint.pt"
    torch.save({"model": {}, "step": 1, "evil": _Payload(str(marker))}, bad)
    with pytest.raises(MatchsigError, match="cannot be read safely as plain tensors") as info:
        _load_plain(bad)
    assert "\n" not in str(info.value)
    assert not marker.exists()
    # the same file through pickle would have run the payload: the refusal is what protects
    with open(bad, "rb") as fh:
        try:
            torch.load(fh, weights_only=False)
        except Exception:
            pass
    assert marker.exists()
    good = tmp_path / "good.pt"
    torch.save({"model": {"w": torch.ones(2)}, "step": 3, "history": [{"loss": 0.5}], "rng": torch.get_rng_state()}, good)
    assert _load_plain(good)["step"] == 3


def test_no_unsafe_loads_in_the_package():
    """Every torch.load in src/ passes weights_only=True; no np.load allows pickles."""
    for path in SRC.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        for call in re.findall(r"torch\.load\([^)]*\)", text):
            assert "weights_only=True" in call, (path.name, call)
        assert "allow_pickle=True" not in text, path.name
        assert "pickle.load" not in text, path.name


def test_train_refuses_an_unknown_precision(tmp_path):
    res = CliRunner().invoke(app, ["train", "--out", str(tmp_path / "t"), "--data", str(tmp_path), "--precision", "fp16"])
    assert isinstance(res.exception, MatchsigError) and "bad --precision 'fp16': expected bf16 or fp32" in str(res.exception)
    assert not (tmp_path / "t").exists()
