"""``matchsig train``: turn all-MiniLM-L6-v2 into a MonoBERT-style relevance cross-encoder.

Recipe (see MODEL.md for the measured results):

1. **Data** (``--data``, the offline TREC DL folder): TREC DL 2020 judged pairs (graded labels),
   the DL 2020 / DL 2022 BM25 top-100 candidate texts, the DL 2020 (200) and DL 2022 (500) query
   texts, the 100 MS MARCO train triples. **Nothing from TREC DL 2019** is used: any passage whose
   id or (normalised) text appears in the DL 2019 folder, and any query whose text does, is dropped.
2. **Teacher**: the all-MiniLM-L6-v2 bi-encoder (mean pooling, L2 norm, cosine). It embeds the pool
   of all training passages; every training query gets as candidates its top-``k`` passages by
   the teacher over that pool, plus its BM25 top-100 and judged passages where it has them.
3. **Student**: ``BertForSequenceClassification`` (2 labels) initialised from the same weights
   (pooler included); the word embeddings stay frozen. Its classifier head is initialised by a
   ridge fit of the teacher's scores on the pooled features (a linear probe), so training starts
   from a head that already ranks.
4. **Loss**, per step: ``lists_judged`` lists of DL20 judged passages (stratified by grade) whose
   target distribution mixes ``softmax(beta * grade)`` with the teacher's ``softmax(cos / tau)``,
   and ``lists_distill`` lists of teacher candidates (+ random easy negatives) with the teacher's
   distribution as target; listwise KL/CE on the student's ``logit1 - logit0``, plus a small
   pointwise BCE (graded label / 3 on judged passages, 0 on easy negatives) that keeps
   ``log_softmax(logits)[:, 1]`` meaningful as an absolute score.
5. Dynamic padding, length-sorted micro-batches, bf16 autocast on CPU, AdamW, linear warm-up then
   linear decay over ``--steps`` steps. ``--minutes`` is a wall-clock stop: the run checkpoints and
   exits, and running the same command again continues where it stopped (the batches depend only
   on (seed, step), and the RNG state is checkpointed, so a resumed run is the same run).
"""

from .batches import make_step_batch, step_loss
from .config import DATA_ENV, TrainConfig, default_data_dir
from .data import load_training_data
from .loop import train
from .prepare import _load_plain, prepare  # noqa: F401 (_load_plain: the safe reader, tested directly)
from .student import build_student, init_head, load_tokenizer, teacher_embed

__all__ = [
    "DATA_ENV",
    "TrainConfig",
    "build_student",
    "default_data_dir",
    "init_head",
    "load_tokenizer",
    "load_training_data",
    "make_step_batch",
    "prepare",
    "step_loss",
    "teacher_embed",
    "train",
]
