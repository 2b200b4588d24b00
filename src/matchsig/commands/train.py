"""``matchsig train``: the embedded default cross-encoder (see MODEL.md)."""

from __future__ import annotations

import typer

from ..errors import MatchsigError
from .common import print_json


def train(
    out: str = typer.Option(..., "--out", help="Run folder: cache, checkpoint, final delta in OUT/embedded."),
    data: str = typer.Option(
        None, "--data", help="TREC DL data folder (default: $MATCHSIG_DATA, else ../shared/data)."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the whole run (init, batches, dropout)."),
    minutes: float = typer.Option(
        60.0, "--minutes", help="Wall-clock stop for this invocation; the same command again resumes."
    ),
    steps: int = typer.Option(None, "--steps", help="Optimizer steps of the schedule (default: the recipe's)."),
    lr: float = typer.Option(None, "--lr", help="Learning rate of the encoder (default: the recipe's)."),
    threads: int = typer.Option(2, "--threads", help="CPU threads."),
    save_steps: str = typer.Option(None, "--save-steps", help="Also save the model whole after these steps "
                                   "(comma-separated; 0 = before the first step) in OUT/checkpoints/step-NNNNNN/, "
                                   "Hugging Face folders for --model (a checkpoint series for `matchsig compare`)."),
    precision: str = typer.Option(None, "--precision", help="bf16 (the recipe's: autocast) or fp32. A CPU without "
                                  "native bf16 instructions emulates bf16, about 30x slower than fp32."),
) -> None:
    """Fine-tune all-MiniLM-L6-v2 into the MonoBERT-style cross-encoder shipped as 'embedded'.

    Never reads TREC DL 2019 except to exclude its queries and passages. Copy OUT/embedded/* into
    src/matchsig/embedded/ to ship the result.
    """
    from pathlib import Path

    from ..training import TrainConfig, default_data_dir
    from ..training import train as run_training

    data_dir = Path(data) if data else default_data_dir()
    if not data_dir.is_dir():
        raise MatchsigError(f"training data folder not found: {data_dir} (give --data or set MATCHSIG_DATA)")
    if minutes <= 0:
        raise MatchsigError("--minutes must be positive")
    cfg = TrainConfig(seed=seed, minutes=minutes, threads=threads)
    if steps is not None:
        if steps <= 0:
            raise MatchsigError("--steps must be positive")
        cfg.steps = steps
    if lr is not None:
        cfg.lr = lr
    if precision is not None:
        if precision not in ("bf16", "fp32"):
            raise MatchsigError(f"bad --precision {precision!r}: expected bf16 or fp32")
        cfg.bf16 = precision == "bf16"
    if save_steps is not None:
        try:
            cfg.save_steps = [int(s) for s in save_steps.split(",") if s.strip()]
        except ValueError:
            raise MatchsigError(f"bad --save-steps {save_steps!r}: expected comma-separated step numbers") from None
    summary = run_training(data_dir, Path(out), cfg, log=lambda msg: typer.echo(msg, err=True))
    print_json(summary)
