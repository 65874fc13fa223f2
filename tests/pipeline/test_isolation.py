"""A document the tokenizer cannot take fails alone, not with its chunk."""
from __future__ import annotations

import numpy as np

from model.tokenize import Tokenized
from pipeline.records import Document
from pipeline.stages import tokenize_isolating


class PickyTokenizer:
  """Tokenizes like the real one, but fails any batch holding a text with "BAD" in it."""

  def __init__(self):
    self.calls = 0

  def __call__(self, texts):
    self.calls += 1
    if any("BAD" in t for t in texts):
      raise ValueError("cannot tokenize")
    return Tokenized([np.array([0, 5, 2], np.int32) for _ in texts], np.zeros(len(texts), bool))


def test_tokenizer_failures_are_isolated_to_their_documents():
  docs = [Document("s", i, str(i), "BAD" if i in (5, 40) else f"doc {i}") for i in range(64)]
  tokenizer = PickyTokenizer()
  ids, truncated, failed = tokenize_isolating(tokenizer, docs)
  assert [i for i, t in enumerate(ids) if t is not None] == [i for i in range(64) if i not in (5, 40)]
  assert [(f.row, f.reason) for f in failed] == [(5, "tokenizer_failed: ValueError: cannot tokenize"),
                                                 (40, "tokenizer_failed: ValueError: cannot tokenize")]
  assert [f.raw for f in failed] == ["BAD", "BAD"]
  assert tokenizer.calls < 30  # halving, not one call per document


def test_a_rust_panic_is_a_document_failure_too():
  class Panicking(PickyTokenizer):
    def __call__(self, texts):
      if any("BAD" in t for t in texts):
        raise BaseException("pyo3_runtime.PanicException: index out of bounds")  # what pyo3 raises
      return super().__call__(texts)
  ids, _, failed = tokenize_isolating(Panicking(), [Document("s", i, str(i), t) for i, t in enumerate(["a", "BAD", "b"])])
  assert [t is None for t in ids] == [False, True, False] and failed[0].code == "tokenizer_failed"
