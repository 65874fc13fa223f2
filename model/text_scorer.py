"""Texts in, scores out: the checkpoint's tokenizer in front of the compiled scorer.

This is the unit a worker loads once and every batch goes through; `bench/` times it alone.
"""
from __future__ import annotations

import dataclasses
import logging
import os

import jax
import numpy as np

from model import checkpoint, hub
from model.precision import COMPUTE
from model.scorer import Scorer, ScorerConfig, int_scores
from model.tokenize import DocumentTokenizer

log = logging.getLogger(__name__)
DEFAULT_COMPILATION_CACHE = os.path.join(os.path.expanduser("~"), ".cache", "koedu", "jax")


@dataclasses.dataclass(frozen=True)
class Scores:
  score: np.ndarray  # float32, raw model output
  int_score: np.ndarray  # int64, round-half-even of clip(score, 0, 5)
  num_tokens: np.ndarray  # int64, after truncation, special tokens included
  truncated: np.ndarray  # bool


class TextScorer:

  def __init__(self, tokenizer: DocumentTokenizer, scorer: Scorer):
    self.tokenizer, self.scorer = tokenizer, scorer

  def score(self, texts: list[str]) -> Scores:
    tokens = self.tokenizer(texts)
    scores = self.scorer.score(tokens.ids)
    return Scores(scores, int_scores(scores),
                  np.fromiter((len(t) for t in tokens.ids), np.int64, len(texts)), tokens.truncated)


def resolve_dtype(dtype: str) -> str:
  if dtype == "auto":
    # TPUs multiply in bf16; three passes keep int_score as fp32 has it where one pass did not
    # (docs/benchmarks.md). On CPU bf16 is emulated and slower than fp32.
    return "bfloat16_3x" if jax.default_backend() == "tpu" else "float32"
  return dtype


def enable_compilation_cache(directory: str | None) -> None:
  """JAX's persistent cache: a scheduled rerun loads its programs instead of compiling them."""
  if directory == "none":
    return
  directory = directory or DEFAULT_COMPILATION_CACHE
  jax.config.update("jax_compilation_cache_dir", directory)
  # Cache every program: the scorer's few shapes are each worth keeping.
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)


def load_text_scorer(model: str, *, revision: str | None = None, max_length: int = 512,
                     dtype: str = "auto", tokens_per_device: int = 16384, allow_pickle: bool = False,
                     cache_dir: str | None = None, compilation_cache_dir: str | None = None,
                     warmup: bool = False) -> TextScorer:
  enable_compilation_cache(compilation_cache_dir)
  model_dir = hub.fetch(model, revision=revision, cache_dir=cache_dir, allow_pickle=allow_pickle)
  dtype = resolve_dtype(dtype)
  cfg, classifier = checkpoint.load_classifier(model_dir, **COMPUTE[dtype].model_kwargs(),
                                               allow_pickle=allow_pickle)
  scorer = Scorer(classifier, ScorerConfig(max_length=min(max_length, cfg.max_length),
                                           tokens_per_device=tokens_per_device, dtype=dtype))
  log.info("loaded %s (%s, %d layers, hidden %d) on %d %s device(s)", model, dtype,
           cfg.num_hidden_layers, cfg.hidden_size, len(scorer.mesh.devices.flat), jax.default_backend())
  if warmup:
    scorer.warmup()
  return TextScorer(DocumentTokenizer(model_dir, scorer.config.max_length).load(), scorer)
