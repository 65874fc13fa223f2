"""The JAX classifier behind Beam's RunInference.

Nothing heavy happens at construction: the handler carries only names and settings, and each
worker fetches, loads and compiles in `load_model()`.
"""
from __future__ import annotations

import logging
import time
from typing import Any, Iterable, Sequence

from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import ModelHandler

from pipeline.options import ScoringConfig
from pipeline.records import Document, Scored

log = logging.getLogger(__name__)
NAMESPACE = "koedu"
PROGRESS_EVERY_SECONDS = 30


class KoeduModelHandler(ModelHandler[Document, Scored, Any]):

  def __init__(self, config: ScoringConfig, revision: str | None = None):
    self._config = config
    self._revision = revision
    self._scored = Metrics.counter(NAMESPACE, "records_scored")
    self._tokens = Metrics.counter(NAMESPACE, "tokens")
    self._truncated = Metrics.counter(NAMESPACE, "truncated")
    self._progress = (time.monotonic(), 0)
    self._done = 0

  def load_model(self):
    from model.text_scorer import load_text_scorer
    c = self._config
    return load_text_scorer(c.model, revision=self._revision, max_length=c.max_length, dtype=c.dtype,
                            tokens_per_device=c.tokens_per_device, allow_pickle=c.allow_pickle,
                            cache_dir=c.model_cache_dir, compilation_cache_dir=c.compilation_cache_dir)

  def run_inference(self, batch: Sequence[Document], model, inference_args=None) -> Iterable[Scored]:
    scores = model.score([d.text for d in batch])
    self._scored.inc(len(batch))
    self._tokens.inc(int(scores.num_tokens.sum()))
    self._truncated.inc(int(scores.truncated.sum()))
    self._report(len(batch))
    return [Scored(d.source, d.row, d.id, float(s), int(i), int(n), bool(t))
            for d, s, i, n, t in zip(batch, scores.score, scores.int_score, scores.num_tokens,
                                     scores.truncated)]

  def _report(self, n: int) -> None:
    self._done += n
    since, done_then = self._progress
    now = time.monotonic()
    if now - since >= PROGRESS_EVERY_SECONDS:
      log.info("scored %d documents (%.1f/s over the last %.0fs)", self._done,
               (self._done - done_then) / (now - since), now - since)
      self._progress = (now, self._done)

  def get_num_bytes(self, batch: Sequence[Document]) -> int:
    return sum(len(d.text.encode("utf-8")) for d in batch)

  def batch_elements_kwargs(self) -> dict:
    # Fixed-size batches, without Beam's length buckets: the scorer sorts and packs each batch
    # into rows itself, and a batch mixing long and short documents packs with the least padding.
    return {"min_batch_size": self._config.batch_size, "max_batch_size": self._config.batch_size}

  def share_model_across_processes(self) -> bool:
    return self._config.share_model_across_processes

  def get_metrics_namespace(self) -> str:
    return NAMESPACE
