"""The JAX classifier behind Beam's RunInference.

Nothing heavy happens at construction: the handler carries only names and settings, and each
worker fetches, loads and compiles in `load_model()`. Elements are chunks of a shard, so a batch
is one chunk: the scorer packs its documents into rows itself.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any, Iterable, Sequence

from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import ModelHandler

from model.hub import ModelInfo
from pipeline.options import ScoringConfig
from pipeline.records import Chunk, Document, Rejected, Scored

log = logging.getLogger(__name__)
NAMESPACE = "koedu"
PROGRESS_EVERY_SECONDS = 30


@dataclasses.dataclass
class ScoredChunk:
  chunk: Chunk
  scored: list[Scored]
  failed: list[Rejected]  # documents the model could not score


def _score_isolating_failures(model, docs: list[Document]) -> tuple[list[Scored], list[Rejected]]:
  """Scores documents; when a batch fails, halves it until the documents at fault are found, so
  one document the tokenizer or model cannot take does not send thousands to errors/."""
  if not docs:
    return [], []
  try:
    scores = model.score([d.text for d in docs])
  except Exception as err:  # the failure belongs to some document(s); find them
    if len(docs) == 1:
      d = docs[0]
      log.warning("%s row %d: %s: %s", d.source, d.row, type(err).__name__, err)
      return [], [Rejected(d.source, d.row, f"inference_failed: {type(err).__name__}: {err}", d.text)]
    half = len(docs) // 2
    left, right = _score_isolating_failures(model, docs[:half]), _score_isolating_failures(model, docs[half:])
    return left[0] + right[0], left[1] + right[1]
  return [Scored(d.source, d.row, d.id, float(s), int(i), int(n), bool(t))
          for d, s, i, n, t in zip(docs, scores.score, scores.int_score, scores.num_tokens,
                                   scores.truncated)], []


class KoeduModelHandler(ModelHandler[Chunk, ScoredChunk, Any]):

  def __init__(self, config: ScoringConfig, model: ModelInfo):
    self._config = config
    self._model = model  # what the launcher pinned: every worker loads exactly these files
    self._scored = Metrics.counter(NAMESPACE, "records_scored")
    self._tokens = Metrics.counter(NAMESPACE, "tokens")
    self._truncated = Metrics.counter(NAMESPACE, "truncated")
    self._progress = (time.monotonic(), 0)
    self._done = 0

  def load_model(self):
    from model import hub
    from model.runner import RunnerConfig
    from model.text_scorer import enable_compilation_cache, load_text_scorer
    c = self._config
    enable_compilation_cache(c.compilation_cache_dir)
    model_dir = hub.fetch(self._model, cache_dir=c.model_cache_dir)
    return load_text_scorer(model_dir, RunnerConfig(max_length=c.max_length, tokens_per_device=c.tokens_per_device),
                            precision=c.dtype, allow_pickle=c.allow_pickle)

  def run_inference(self, batch: Sequence[Chunk], model, inference_args=None) -> Iterable[ScoredChunk]:
    results = []
    for chunk in batch:
      scored, failed = _score_isolating_failures(model, chunk.documents)
      results.append(ScoredChunk(chunk, scored, failed))
      self._scored.inc(len(scored))
      self._tokens.inc(sum(s.num_tokens for s in scored))
      self._truncated.inc(sum(s.truncated for s in scored))
      self._report(len(scored))
    return results

  def _report(self, n: int) -> None:
    self._done += n
    since, done_then = self._progress
    now = time.monotonic()
    if now - since >= PROGRESS_EVERY_SECONDS:
      log.info("scored %d documents (%.1f/s over the last %.0fs)", self._done,
               (self._done - done_then) / (now - since), now - since)
      self._progress = (now, self._done)

  def get_num_bytes(self, batch: Sequence[Chunk]) -> int:
    return sum(len(d.text.encode("utf-8")) for chunk in batch for d in chunk.documents)

  def batch_elements_kwargs(self) -> dict:
    # A chunk is already a batch of documents; the scorer sorts and packs it into rows.
    return {"min_batch_size": 1, "max_batch_size": 1}

  def share_model_across_processes(self) -> bool:
    return self._config.share_model_across_processes

  def get_metrics_namespace(self) -> str:
    return NAMESPACE
