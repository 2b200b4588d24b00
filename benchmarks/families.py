"""Ablated / plain time per model family, and the cost of the load-time self-check (issue 20).

Random weights (time does not depend on them), the installed MiniLM WordPiece tokenizer for every
family, real DL19 pairs of the bundled demo collection. Per family, a tiny shape and one realistic
shape (the popular reranker's dimensions); variants interleaved per round on the same pairs
(``common.interleave``), ratios against plain scoring measured in the same run.

    python benchmarks/families.py --pairs 32 --rounds 3 --out benchmarks/families.json

Prompt-based families (decoder, t5) read a plain prompt without an end-of-sequence token (the
WordPiece tokenizer has none); their aggregating variant is LAST<-* (decoder) and POST<-* (monoT5).
"""

from __future__ import annotations

import argparse
import time

import torch

from common import REPO, dump, git_commit, interleave, load_pool, machine_info, pool_pairs  # noqa: F401

VARIANTS = {"plain": None, "D<-D": "D<-D", "CLS<-*": "CLS<-*", "Q<-D,D<-Q": "Q<-D,D<-Q"}
#: The same variants in the part names of prompt-based families (the aggregating part: LAST; monoT5: POST).
RENAMED = {"decoder": {"CLS<-*": "LAST<-*"}, "t5": {"CLS<-*": "POST<-*"}}
#: Prompts without the end-of-sequence token (the WordPiece tokenizer used for every family has none).
PLAIN_PROMPT = ("query: ", " document: ", " relevant")


def _shapes(vocab: int, pad: int, cls: int, sep: int) -> dict:
    """family -> {shape name: (checkpoint it mimics, model constructor)}."""
    from transformers import (BertConfig, BertForSequenceClassification, DistilBertConfig,
                              DistilBertForSequenceClassification, ModernBertConfig,
                              ModernBertForSequenceClassification, RobertaConfig, RobertaForSequenceClassification)

    def bert(h, layers, heads, inter):
        return lambda: BertForSequenceClassification(BertConfig(vocab_size=vocab, hidden_size=h, num_hidden_layers=layers,
                                                                num_attention_heads=heads, intermediate_size=inter,
                                                                num_labels=2))

    def roberta(h, layers, heads, inter):
        return lambda: RobertaForSequenceClassification(RobertaConfig(
            vocab_size=vocab, hidden_size=h, num_hidden_layers=layers, num_attention_heads=heads,
            intermediate_size=inter, num_labels=2, pad_token_id=pad, max_position_embeddings=514))

    def distil(h, layers, heads, inter):
        return lambda: DistilBertForSequenceClassification(DistilBertConfig(
            vocab_size=vocab, dim=h, n_layers=layers, n_heads=heads, hidden_dim=inter, num_labels=2))

    def modern(h, layers, heads, inter, local):
        return lambda: ModernBertForSequenceClassification(ModernBertConfig(
            vocab_size=vocab, hidden_size=h, num_hidden_layers=layers, num_attention_heads=heads,
            intermediate_size=inter, local_attention=local, global_attn_every_n_layers=3, num_labels=2,
            pad_token_id=pad, cls_token_id=cls, sep_token_id=sep, bos_token_id=None, eos_token_id=None))

    def deberta(h, layers, heads, inter):
        from transformers import DebertaV2Config, DebertaV2ForSequenceClassification

        return lambda: DebertaV2ForSequenceClassification(DebertaV2Config(
            vocab_size=vocab, hidden_size=h, num_hidden_layers=layers, num_attention_heads=heads,
            intermediate_size=inter, num_labels=1, relative_attention=True, position_buckets=256,
            pos_att_type=["p2c", "c2p"], max_relative_positions=-1, pad_token_id=pad))

    def qwen(h, layers, heads, kv, inter):
        from transformers import Qwen3Config, Qwen3ForSequenceClassification

        return lambda: Qwen3ForSequenceClassification(Qwen3Config(
            vocab_size=vocab, hidden_size=h, num_hidden_layers=layers, num_attention_heads=heads,
            num_key_value_heads=kv, head_dim=h // heads, intermediate_size=inter, num_labels=1, pad_token_id=pad))

    def t5(d, layers, heads, ff):
        from transformers import T5Config, T5ForConditionalGeneration

        return lambda: T5ForConditionalGeneration(T5Config(
            vocab_size=vocab, d_model=d, d_kv=d // heads, d_ff=ff, num_layers=layers, num_heads=heads,
            decoder_start_token_id=pad, pad_token_id=pad, eos_token_id=sep))

    return {
        "deberta-v2": {"tiny": ("3 x 4 heads x 32", deberta(32, 3, 4, 48)),
                       "realistic": ("mxbai-rerank-base-v1 (deberta-v3-base): 12 x 12 x 768", deberta(768, 12, 12, 3072))},
        "decoder": {"tiny": ("Qwen3 3 x 4 heads (2 kv) x 32", qwen(32, 3, 4, 2, 48)),
                    "realistic": ("Qwen3-Reranker-0.6B dimensions: 28 x 16 heads (8 kv) x 1024", qwen(1024, 28, 16, 8, 3072))},
        "t5": {"tiny": ("3 x 4 heads x 32", t5(32, 3, 4, 64)),
               "realistic": ("monot5-base: 12 x 12 x 768", t5(768, 12, 12, 3072))},
        "bert": {"tiny": ("3 x 4 heads x 32", bert(32, 3, 4, 48)),
                 "realistic": ("bert-base / ms-marco-MiniLM-L12 depth: 12 x 12 x 768", bert(768, 12, 12, 3072))},
        "roberta": {"tiny": ("3 x 4 heads x 32", roberta(32, 3, 4, 48)),
                    "realistic": ("bge-reranker-base: 12 x 12 x 768", roberta(768, 12, 12, 3072))},
        "distilbert": {"tiny": ("3 x 4 heads x 32", distil(32, 3, 4, 48)),
                       "realistic": ("distilbert-base: 6 x 12 x 768", distil(768, 6, 12, 3072))},
        "modernbert": {"tiny": ("4 x 4 heads x 32, window 16", modern(32, 4, 4, 48, 16)),
                       "realistic": ("gte-reranker-modernbert-base: 22 x 12 x 768, window 128",
                                     modern(768, 22, 12, 1152, 128))},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--families", default="bert,roberta,distilbert,modernbert,deberta-v2,decoder,t5")
    ap.add_argument("--shapes", default="tiny,realistic")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "families.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from transformers import AutoTokenizer

    from common import minilm_with_head
    from matchsig import CrossEncoder
    from matchsig.engine.prompts import PromptTemplate

    tok = AutoTokenizer.from_pretrained(minilm_with_head())
    qs, ds, _ = pool_pairs(load_pool("demo", cap=1), args.pairs, seed=0)
    shapes = _shapes(tok.vocab_size, tok.pad_token_id, tok.cls_token_id, tok.sep_token_id)
    results = {"machine": machine_info(), "commit": git_commit(), "pairs": len(qs), "rounds": args.rounds,
               "families": {}}
    for family in args.families.split(","):
        for shape in args.shapes.split(","):
            mimics, build = shapes[family][shape]
            torch.manual_seed(0)
            model = build().eval()
            t0 = time.perf_counter()
            template = PromptTemplate(*PLAIN_PROMPT) if family in RENAMED else None
            ce = CrossEncoder(model, tok, device="cpu", template=template)
            load = time.perf_counter() - t0
            enc = ce.encode(qs, ds)
            specs = {name: RENAMED.get(family, {}).get(name, abl) for name, abl in VARIANTS.items()}
            variants = {name: (lambda a=abl: ce.score_many(qs, ds, [a], batch_size=16, encoded=enc))
                        for name, abl in specs.items()}
            timing = interleave(variants, args.rounds, baseline="plain",
                                log=lambda m, f=family, s=shape: print(f"{f}/{s}: {m}", flush=True))
            t0 = time.perf_counter()
            ce.score(*[[x] * 3 for x in ("what is a flea", "fleas")])  # three short pairs: a plain-forward yardstick
            small = time.perf_counter() - t0
            results["families"][f"{family}/{shape}"] = {
                "mimics": mimics, "specs": specs, "layers": ce.num_layers, "heads": ce.num_heads, "family": ce.family.name,
                "tokens_mean": float(enc.lengths().mean()), "plain_s": timing["median_s"]["plain"],
                "ratio_median": timing["ratio_median"], "ratio_per_round": timing["ratio_per_round"],
                "self_check": ce.check.to_dict(), "constructor_s": load,
                "self_check_over_plain_scoring": ce.check.seconds / timing["median_s"]["plain"],
                "three_short_pairs_s": small,
            }
            print(family, shape, {k: round(v, 3) for k, v in timing["ratio_median"].items()},
                  f"self-check {ce.check.seconds:.2f}s (plain scoring of {len(qs)} pairs {timing['median_s']['plain']:.2f}s)",
                  flush=True)
            dump(args.out, results)


if __name__ == "__main__":
    main()
