"""The frozen encoder's `<s>` features, computed once per document.

With the encoder frozen and no dropout (fineweb-edu trains with dropout off), the head sees the
same features every epoch, so one encoder pass replaces `epochs` of them. The pass is the
scorer's own compiled runner (model/runner.py), packing documents several to a row exactly as
scoring does, so the head trains on the features it will score from.
"""
from __future__ import annotations

import logging
import time

import numpy as np

from model.runner import EncoderRunner, RunnerConfig
from model.runtime import Runtime
from model.xlmr import XLMRobertaClassifier

log = logging.getLogger(__name__)


def encode(model: XLMRobertaClassifier, ids: list[np.ndarray], runtime: Runtime,
           config: RunnerConfig) -> np.ndarray:
  """(documents, hidden) float32: the final hidden state at each document's `<s>`. `model` is
  built for `runtime` (`runtime.model_kwargs()`)."""
  start = time.perf_counter()
  features = EncoderRunner(model, runtime, config, output="features").run(ids)
  log.info("encoded %d documents in %.1fs", len(ids), time.perf_counter() - start)
  return features
