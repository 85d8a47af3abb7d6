"""Fine-tuning on one language with the first N blocks frozen (LoRA or full).

* :mod:`.train`: data, freezing, reproducible and resumable training, checkpoints.
* :mod:`.experiment`: :func:`run_finetune`, the experiment of ``xlgap finetune``,
  returning a :class:`FinetuneResult`.
"""

from xlgap.interventions.finetune.experiment import (
    FinetuneOptions,
    FinetuneResult,
    run_finetune,
)
from xlgap.interventions.finetune.train import (
    CHECKPOINT,
    FINAL,
    FINAL_META,
    METHODS,
    Example,
    TrainSpec,
    batch_indices,
    completion_examples,
    finetuned_backend,
    lr_at,
    prepare_completions,
    prepare_model,
    prepare_texts,
    text_examples,
    train,
)

__all__ = [
    "CHECKPOINT",
    "FINAL",
    "FINAL_META",
    "METHODS",
    "Example",
    "FinetuneOptions",
    "FinetuneResult",
    "TrainSpec",
    "batch_indices",
    "completion_examples",
    "finetuned_backend",
    "lr_at",
    "prepare_completions",
    "prepare_model",
    "prepare_texts",
    "run_finetune",
    "text_examples",
    "train",
]
