"""The seed model's inference recipe (docs/contracts.md): what a document is scored as, and how
a raw score becomes the int_score that scoring, training and comparisons all count in."""
from __future__ import annotations

import numpy as np

# KoE5 (an E5 model) was trained with "query: " / "passage: " prefixes; documents are passages.
PREFIX = "passage: "
SCORE_RANGE = (0, 5)


def int_scores(scores) -> np.ndarray:
  """round(clip(score, 0, 5)) with halves to even, as fineweb-edu's int(round(...))."""
  return np.rint(np.clip(np.asarray(scores), *SCORE_RANGE)).astype(np.int64)
