"""The RunInference handler keeps a bad document from taking its whole chunk down."""
from __future__ import annotations

import numpy as np

from model.text_scorer import Scores
from pipeline.handler import KoeduModelHandler
from pipeline.options import ScoringConfig
from pipeline.records import Chunk, Document


class PickyModel:
  """Scores like a model, but fails any batch holding a text with "BAD" in it."""

  def __init__(self):
    self.calls = 0

  def score(self, texts):
    self.calls += 1
    if any("BAD" in t for t in texts):
      raise ValueError("cannot tokenize")
    n = len(texts)
    return Scores(np.arange(n, dtype=np.float32), np.arange(n) % 6, np.full(n, 7), np.zeros(n, bool))


def test_failures_are_isolated_to_their_documents():
  config = ScoringConfig(inputs=("x",), output="o", model="m", text_field="text", id_field="id",
                         threshold=3, batch_size=64, max_length=512, dtype="auto", tokens_per_device=1024,
                         allow_pickle=False, model_cache_dir=None, compilation_cache_dir=None,
                         share_model_across_processes=False)
  docs = [Document("s", i, str(i), "BAD" if i in (5, 40) else f"doc {i}") for i in range(64)]
  model = PickyModel()
  (result,) = KoeduModelHandler(config, None).run_inference([Chunk("s", 0, docs, [], {})], model)
  assert sorted(s.row for s in result.scored) == [i for i in range(64) if i not in (5, 40)]
  assert [(f.row, f.reason) for f in result.failed] == [(5, "inference_failed: ValueError: cannot tokenize"),
                                                        (40, "inference_failed: ValueError: cannot tokenize")]
  assert model.calls < 30  # halving, not one call per document
