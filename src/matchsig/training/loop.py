"""The training loop: resumable from ``checkpoint.pt``, stopped by ``--minutes``, exported at the end."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import MatchsigError
from .batches import make_step_batch, step_loss
from .config import TrainConfig
from .prepare import _load_plain, prepare
from .student import _set_threads, build_student, init_head, load_tokenizer


def _lr_lambda(cfg: TrainConfig):
    """Linear warm-up over ``warmup * steps`` steps, then linear decay to 0 at ``steps``."""
    warm = max(1, int(cfg.warmup * cfg.steps))

    def f(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return max(0.0, (cfg.steps - step) / max(1, cfg.steps - warm))

    return f


def _check_recipe(out: Path, cfg: TrainConfig) -> None:
    """Refuse to continue a run of another recipe in ``out``; record the recipe of a new one."""
    cfg_path = out / "train_config.json"
    if cfg_path.is_file():
        old = json.loads(cfg_path.read_text())
        if old.get("fingerprint") != cfg.fingerprint():
            raise MatchsigError(f"{out} holds a run with another recipe; use a new --out folder")
    else:
        cfg_path.write_text(json.dumps({"fingerprint": cfg.fingerprint(), "recipe": cfg.recipe()}, indent=2) + "\n")


def _optimizer(model, cfg: TrainConfig):
    """AdamW with three groups (decayed weights, biases/norms, the head) and the warm-up schedule."""
    decay, no_decay, head = [], [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if name.startswith(("classifier.", "bert.pooler.")):
            head.append(p)
        elif p.ndim < 2:
            no_decay.append(p)
        else:
            decay.append(p)
    opt = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": cfg.weight_decay, "lr": cfg.lr},
            {"params": no_decay, "weight_decay": 0.0, "lr": cfg.lr},
            {"params": head, "weight_decay": 0.0, "lr": cfg.head_lr},
        ],
    )
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(cfg))


@dataclass
class _State:
    """The model, its optimiser and the progress that ``checkpoint.pt`` holds."""

    model: Any
    opt: Any
    sched: Any
    ckpt: Path
    t_start: float
    step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    elapsed_before: float = 0.0

    def seconds(self) -> float:
        """Training time of the whole run, earlier invocations included."""
        return self.elapsed_before + (time.time() - self.t_start)

    def resume(self, steps: int, log) -> bool:
        """Load ``checkpoint.pt`` if there is one; True when the run continues."""
        if not self.ckpt.is_file():
            return False
        try:
            state = _load_plain(self.ckpt)
        except MatchsigError as exc:
            raise MatchsigError(f"{exc}; delete it to train from the start") from None
        self.model.load_state_dict(state["model"], strict=False)
        self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"])
        self.step = state["step"]
        self.history = state["history"]
        self.elapsed_before = state.get("train_seconds", 0.0)
        log(f"resuming {self.ckpt} at step {self.step}/{steps}")
        return True

    def save(self, cfg: TrainConfig) -> None:
        """Write ``checkpoint.pt`` atomically (the frozen word embeddings are not stored)."""
        trainable = {k: v for k, v in self.model.state_dict().items() if not k.startswith("bert.embeddings.word_embeddings")}
        tmp = self.ckpt.with_suffix(".tmp")
        torch.save(
            {
                "model": trainable,
                "optimizer": self.opt.state_dict(),
                "scheduler": self.sched.state_dict(),
                "rng": torch.get_rng_state(),
                "step": self.step,
                "history": self.history,
                "train_seconds": self.seconds(),
                "fingerprint": cfg.fingerprint(),
            },
            tmp,
        )
        os.replace(tmp, self.ckpt)


#: Where ``--save-steps`` checkpoints go, inside the training folder.
CHECKPOINTS = "checkpoints"


def checkpoint_dir(out: Path, step: int) -> Path:
    """The folder of the model saved after ``step`` steps (``--save-steps``)."""
    return Path(out) / CHECKPOINTS / f"step-{step:06d}"


def check_save_steps(cfg: TrainConfig) -> list[int]:
    """``cfg.save_steps`` sorted, each within 0 .. steps (else a one-line error)."""
    steps = sorted({int(s) for s in cfg.save_steps})
    bad = [s for s in steps if not 0 <= s <= cfg.steps]
    if bad:
        raise MatchsigError(f"--save-steps {bad[0]}: must lie in 0 .. {cfg.steps} (the run's --steps)")
    return steps


def _save_model(state: _State, out: Path, cfg: TrainConfig, tokenizer) -> None:
    """Save the model as it is after ``state.step`` steps as a loadable Hugging Face folder (once: a resumed run
    keeps the folder it wrote before), with ``checkpoint.json`` saying which step of which recipe it is."""
    folder = checkpoint_dir(out, state.step)
    if folder.is_dir():
        return
    tmp = folder.with_name(folder.name + ".tmp")
    state.model.save_pretrained(str(tmp))
    tokenizer.save_pretrained(str(tmp))
    info = {"step": state.step, "steps": cfg.steps, "seed": cfg.seed, "fingerprint": cfg.fingerprint(),
            "train_seconds": round(state.seconds(), 1)}
    (tmp / "checkpoint.json").write_text(json.dumps(info, indent=2) + "\n")
    os.replace(tmp, folder)


def _run_steps(state: _State, prep, cfg: TrainConfig, tokenizer, out: Path | None = None) -> bool:
    """Train until ``cfg.steps``; False when ``--minutes`` (or the test hook) stopped it first."""
    from tqdm import tqdm

    state.model.train()
    last_ckpt = time.time()
    deadline = state.t_start + cfg.minutes * 60.0
    bar = tqdm(total=cfg.steps, initial=state.step, desc="training", unit="step")
    run_loss = None
    finished = True
    while state.step < cfg.steps:
        if time.time() > deadline or (cfg.stop_after_steps and state.step >= cfg.stop_after_steps):
            finished = False
            break
        lists = make_step_batch(prep, cfg, state.step)
        loss, parts = step_loss(state.model, prep, lists, cfg, tokenizer)
        state.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in state.model.parameters() if p.requires_grad], 1.0)
        state.opt.step()
        state.sched.step()
        state.step += 1
        if out is not None and state.step in cfg.save_steps:
            _save_model(state, out, cfg, tokenizer)
        loss_value = loss.item()
        run_loss = loss_value if run_loss is None else 0.98 * run_loss + 0.02 * loss_value
        bar.update(1)
        bar.set_postfix(loss=f"{run_loss:.3f}", lr=f"{state.sched.get_last_lr()[0]:.1e}")
        if state.step % 25 == 0:
            state.history.append({"step": state.step, "loss": round(run_loss, 4), **{k: round(v, 4) for k, v in parts.items()}})
        if time.time() - last_ckpt > cfg.checkpoint_minutes * 60 or state.step == cfg.steps:
            state.save(cfg)
            last_ckpt = time.time()
    bar.close()
    state.save(cfg)
    return finished


def _export(state: _State, out: Path, cfg: TrainConfig, prep, summary: dict[str, Any], train_seconds: float, log) -> dict[str, Any]:
    """Save the trained model: whole for the tiny test model, else as a delta in ``out/embedded``."""
    from ..engine.embedded import export_delta

    state.model.eval()
    if cfg.tiny:  # test hook: a tiny model has no delta against the real base; save it whole
        state.model.save_pretrained(str(out / "model"))
        summary["model"] = str(out / "model")
        return summary
    info = {
        "recipe": cfg.recipe(),
        "seed": cfg.seed,
        "steps": state.step,
        "train_seconds": summary["train_seconds"],
        "training_data": prep["stats"],
        "max_length": cfg.max_length,
        "trained_with": "matchsig train",
    }
    manifest = export_delta(state.model, out / "embedded", info)
    summary["embedded"] = str(out / "embedded")
    summary["reconstructed_state_sha256"] = manifest["reconstructed_state_sha256"]
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    log(f"done: {state.step} steps in {train_seconds / 60:.1f} min; delta in {out / 'embedded'}")
    return summary


def cpu_has_native_bf16() -> bool:
    """Whether oneDNN has bf16 kernels on this CPU (else torch emulates bf16 matmuls, measured 30x slower than
    fp32 for a MiniLM micro-batch on a 2-core AVX2 EPYC)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def train(data_dir: Path, out: Path, cfg: TrainConfig, log=print) -> dict[str, Any]:
    """Run (or continue) training into ``out``; returns a summary. Final: ``out/embedded/`` + ``out/model/``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _set_threads(cfg.threads)
    if cfg.bf16 and not cpu_has_native_bf16():
        log("warning: this CPU has no native bf16 instructions (AVX-512 BF16 / AMX): bf16 autocast is emulated, "
            "about 30x slower than fp32 here; `--precision fp32` trains the same recipe in fp32 (another fingerprint)")
    t_start = time.time()
    cfg.save_steps = check_save_steps(cfg)
    _check_recipe(out, cfg)
    tokenizer = load_tokenizer()
    prep = prepare(Path(data_dir), out, cfg, tokenizer, log)
    model = build_student(cfg)
    opt, sched = _optimizer(model, cfg)
    state = _State(model, opt, sched, out / "checkpoint.pt", t_start)
    if not state.resume(cfg.steps, log):
        init_head(model, prep, cfg, tokenizer, log)
        torch.manual_seed(cfg.seed)
        if 0 in cfg.save_steps:
            _save_model(state, out, cfg, tokenizer)
    finished = _run_steps(state, prep, cfg, tokenizer, out)
    train_seconds = state.seconds()
    summary = {"step": state.step, "steps": cfg.steps, "train_seconds": round(train_seconds, 1), "finished": state.step >= cfg.steps}
    if not finished:
        log(f"stopped at step {state.step}/{cfg.steps} after --minutes {cfg.minutes}; run the same command again to continue")
        return summary
    return _export(state, out, cfg, prep, summary, train_seconds, log)

