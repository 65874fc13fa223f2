"""Texts in, scores out: the checkpoint's tokenizer in front of the compiled encoder.

This is the unit a worker loads once and every batch goes through; `bench/` times it alone.
"""
from __future__ import annotations

import dataclasses
import logging
import os

import jax
import numpy as np

from model.recipe import int_scores
from model.runner import EncoderRunner, RunnerConfig, load_runner
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

  def __init__(self, tokenizer: DocumentTokenizer, runner: EncoderRunner):
    self.tokenizer, self.runner = tokenizer, runner

  def score(self, texts: list[str]) -> Scores:
    tokens = self.tokenizer(texts)
    scores = self.runner.run(tokens.ids)
    return Scores(scores, int_scores(scores),
                  np.fromiter((len(t) for t in tokens.ids), np.int64, len(texts)), tokens.truncated)


def enable_compilation_cache(directory: str | None) -> None:
  """JAX's persistent cache: a scheduled rerun loads its programs instead of compiling them."""
  if directory == "none":
    return
  directory = directory or DEFAULT_COMPILATION_CACHE
  jax.config.update("jax_compilation_cache_dir", directory)
  # Cache every program: the encoder's few shapes are each worth keeping.
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)


def load_text_scorer(model_dir: str, runner_config: RunnerConfig, *, precision: str = "auto",
                     attention: str = "auto", allow_pickle: bool = False, devices=None,
                     warmup: bool = False) -> TextScorer:
  """Tokenizer and compiled encoder for the local model directory `model_dir`."""
  runner = load_runner(model_dir, runner_config, precision=precision, attention=attention,
                       devices=devices, allow_pickle=allow_pickle)
  runtime = runner.runtime
  log.info("loaded %s (%s, %s attention) on %d %s device(s)", model_dir, runtime.precision,
           runtime.attention, runtime.devices, runtime.platform)
  if warmup:
    runner.warmup()
  return TextScorer(DocumentTokenizer(model_dir, runner_config.max_length).load(), runner)
