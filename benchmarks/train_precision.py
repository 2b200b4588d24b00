"""Why `matchsig train --precision fp32` exists: one MiniLM forward + backward of a training micro-batch
(16 pairs x 192 tokens, the recipe's shape) in fp32 and under bf16 autocast, on this CPU.

    python benchmarks/train_precision.py [--rounds 2]

A CPU without native bf16 instructions (oneDNN: ``torch.ops.mkldnn._is_mkldnn_bf16_supported()``)
emulates the bf16 matmuls; measured on the 2-core AVX2 EPYC: fp32 1.5-2.4 s, bf16 44.6-52.2 s.
"""

from __future__ import annotations

import argparse
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from transformers import AutoModelForSequenceClassification

    from matchsig.engine.embedded import base_model_path

    model = AutoModelForSequenceClassification.from_pretrained(str(base_model_path()), num_labels=1)
    ids = torch.randint(1000, 20000, (16, 192), generator=torch.Generator().manual_seed(0))
    print(f"native bf16: {bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())}")
    for r in range(args.rounds):
        for bf16 in (False, True):
            t0 = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = model(input_ids=ids).logits.float().sum()
            loss.backward()
            print(f"round {r + 1}: {'bf16 autocast' if bf16 else 'fp32'} {time.perf_counter() - t0:.2f} s", flush=True)


if __name__ == "__main__":
    main()
