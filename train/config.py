"""Settings of one training run. The model's shape is the base checkpoint's; these are run-time
settings only. Defaults are the seed model's recipe (see docs on the seed model card) and
fineweb-edu's, which it follows.
"""
from __future__ import annotations

import dataclasses

from model.precision import COMPUTE
from model.runner import RunnerConfig

DEFAULT_BASE = "nlpai-lab/KoE5"  # published as an encoder-only XLMRobertaModel: a fresh head is added
# Peak learning rates when --learning_rate is not given. The head alone: the seed's 3e-4. The
# whole of XLM-R: full fine-tunes of it use about 1e-5 to 3e-5, and at 3e-4 it diverges or
# collapses to one output for every document.
FROZEN_LEARNING_RATE, FULL_LEARNING_RATE = 3e-4, 2e-5
# Settings that may change when an interrupted run resumes: they move no result (beyond the
# float rounding of a different accumulation split) and may need to, e.g. on another slice.
RUNTIME_FIELDS = ("output", "device_batch_size", "device_memory_bytes", "encode_tokens_per_device", "checkpoint_every",
                  "keep_checkpoints", "distributed", "log_every")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  data: tuple[str, ...]  # shard globs (JSON lines, .gz, .zst, Parquet; local or fsspec URLs)
  output: str  # receives the model directory, reports and checkpoints
  model: str = DEFAULT_BASE  # base: a classifier to continue, or an encoder to put a fresh head on
  eval_data: tuple[str, ...] = ()  # held-out shards; empty: split eval_size off `data`, stratified
  text_field: str = "text"  # field holding the document
  label_field: str = "score"  # field holding the 0-5 label (float or int); others are bad rows
  freeze_encoder: bool = True  # train the head only, as fineweb-edu did
  # With a frozen encoder: run it once per document and train the head on cached <s> features.
  # False runs the encoder every step, frozen by the optimizer's mask (slow; the tests use it to
  # prove the mask). Ignored when the encoder trains.
  cache_features: bool = True
  epochs: int | None = None  # None: 20 with a frozen encoder (fineweb-edu), 3 when training all
  max_steps: int | None = None  # optimizer steps; overrides epochs when given
  batch_size: int = 2048  # documents per optimizer step, over all devices and accumulation
  # Documents per device per forward/backward pass; smaller than the device's share of a step
  # accumulates gradients over several passes. None: the most that fit the device's memory, by
  # XLA's analysis of the compiled step (train/memory.py); the whole share with cached features.
  device_batch_size: int | None = None
  # Bytes of memory per device to fit passes into; None: what the device reports (TPU, GPU).
  device_memory_bytes: int | None = None
  # Peak, after warm-up; None: FROZEN_LEARNING_RATE or FULL_LEARNING_RATE, by freeze_encoder.
  learning_rate: float | None = None
  warmup_ratio: float = 0.1  # fraction of all steps of linear warm-up; cosine decay to 0 after
  b1: float = 0.9  # AdamW
  b2: float = 0.98  # AdamW
  eps: float = 1e-8  # AdamW
  weight_decay: float = 0.01  # AdamW, on kernels and embeddings, not biases or LayerNorm (as HF Trainer)
  max_grad_norm: float = 1.0  # HF Trainer's default clipping, which fineweb-edu trained with; 0: off
  eval_size: float = 4096  # held-out documents when no eval_data; below 1, a fraction of the data
  seed: int = 0  # split, data order and a fresh head's initialisation
  max_length: int = 512  # tokens per document, <s> and </s> included, as scoring truncates
  row_lengths: tuple[int, ...] = (128, 256, 512)  # padded lengths of token batches; few shapes, few compilations
  encode_tokens_per_device: int = 16384  # tokens per device per pass when caching features
  # The encoder's precision, a key of model.precision.COMPUTE ("bfloat16" on TPU); parameters
  # and the optimiser stay float32 under every setting.
  dtype: str = "float32"
  # The precision the exported model will be scored at: "auto" is what `pipeline.run --dtype
  # auto` resolves to on this platform (bf16 on TPU). A frozen encoder's cached features are
  # computed at it, so the head is fit, and eval_report.json measured, on what scoring computes.
  score_dtype: str = "auto"
  threshold: int = 3  # int_score at or above which a document is educational, for binary F1
  checkpoint_every: int = 500  # steps between checkpoints; also at every epoch's end
  keep_checkpoints: int = 2  # latest checkpoints kept for resuming (the best one is kept apart)
  log_every: int = 50  # steps between training-loss log lines
  allow_pickle: bool = False  # accept a base that only has pickled PyTorch weights
  # Join the other hosts (jax.distributed.initialize()) even where the TPU runtime does not
  # report several; where it does, train.run joins them anyway (train/hosts.py).
  distributed: bool = False

  def __post_init__(self):
    if not self.data:
      raise ValueError("data: give at least one shard glob")
    if self.epochs is not None and self.epochs < 1:
      raise ValueError(f"epochs must be >= 1, got {self.epochs}")
    if self.max_steps is not None and self.max_steps < 1:
      raise ValueError(f"max_steps must be >= 1, got {self.max_steps}")
    if self.batch_size < 1 or (self.device_batch_size is not None and self.device_batch_size < 1):
      raise ValueError("batch_size and device_batch_size must be >= 1")
    if self.device_memory_bytes is not None and self.device_memory_bytes < 1:
      raise ValueError("device_memory_bytes must be >= 1")
    if not 0 <= self.warmup_ratio <= 1:
      raise ValueError(f"warmup_ratio must be in [0, 1], got {self.warmup_ratio}")
    if self.peak_learning_rate <= 0 or self.max_grad_norm < 0 or self.weight_decay < 0:
      raise ValueError("learning_rate must be > 0, max_grad_norm and weight_decay >= 0")
    if not self.eval_data and not (0 < self.eval_size < 1 or self.eval_size >= 1 and self.eval_size == int(self.eval_size)):
      raise ValueError(f"eval_size must be a fraction in (0, 1) or a whole number of documents, got {self.eval_size}")
    self.runner_config()  # max_length, row_lengths, encode_tokens_per_device: checked there
    if self.dtype not in COMPUTE:
      raise ValueError(f"dtype must be one of {sorted(COMPUTE)}, got {self.dtype!r}")
    if self.score_dtype != "auto" and self.score_dtype not in COMPUTE:
      raise ValueError(f"score_dtype must be 'auto' or one of {sorted(COMPUTE)}, got {self.score_dtype!r}")
    if not 0 <= self.threshold <= 5:
      raise ValueError(f"threshold must be in 0..5, got {self.threshold}")
    if self.checkpoint_every < 1 or self.keep_checkpoints < 1 or self.log_every < 1:
      raise ValueError("checkpoint_every, keep_checkpoints and log_every must be >= 1")

  @property
  def cached(self) -> bool:
    """Whether the head trains on cached features: only a frozen encoder's output stays put."""
    return self.freeze_encoder and self.cache_features

  @property
  def peak_learning_rate(self) -> float:
    if self.learning_rate is not None:
      return self.learning_rate
    return FROZEN_LEARNING_RATE if self.freeze_encoder else FULL_LEARNING_RATE

  @property
  def dropout(self) -> bool:
    """The checkpoint's dropout in training: when the encoder trains. A frozen encoder's head
    trains without it, as fineweb-edu's did (its script sets every dropout to 0)."""
    return not self.freeze_encoder

  @property
  def num_epochs(self) -> int:
    return self.epochs if self.epochs is not None else (20 if self.freeze_encoder else 3)

  def runner_config(self) -> RunnerConfig:
    """How the frozen encoder's features are computed: the scorer's compiled shapes."""
    return RunnerConfig(max_length=self.max_length, row_lengths=self.row_lengths,
                        tokens_per_device=self.encode_tokens_per_device)

  @property
  def lengths(self) -> tuple[int, ...]:
    """Padded row lengths of token batches, as the runner compiles them."""
    return self.runner_config().lengths

  def recipe(self) -> dict:
    """Everything that decides the result, for refusing to resume a different run; the
    learning rate as used, whether given or defaulted."""
    recipe = {k: v for k, v in dataclasses.asdict(self).items() if k not in RUNTIME_FIELDS}
    return {**recipe, "learning_rate": self.peak_learning_rate}

  @classmethod
  def tiny(cls, data, output, model, **overrides) -> "TrainConfig":
    """Small batches and lengths for tests on CPU."""
    kwargs = dict(data=tuple(data) if not isinstance(data, str) else (data,), output=output,
                  model=model, epochs=3, batch_size=32, eval_size=0.2, max_length=64,
                  row_lengths=(32, 64), encode_tokens_per_device=512, checkpoint_every=4,
                  log_every=10)
    kwargs.update(overrides)
    return cls(**kwargs)
