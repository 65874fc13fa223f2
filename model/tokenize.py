"""Tokenization exactly as `AutoTokenizer(PREFIX + text, truncation=True, max_length=L)` does it,
but through the Rust tokenizer's parallel batch path, with token counts and a truncated flag.
"""
from __future__ import annotations

import dataclasses
import os
import threading

import numpy as np

from model.recipe import PREFIX


@dataclasses.dataclass(frozen=True)
class Tokenized:
  ids: list[np.ndarray]  # per document, int32, `<s>` ... `</s>`, at most max_length long
  truncated: np.ndarray  # bool per document


class DocumentTokenizer:
  """Wraps the checkpoint's fast tokenizer. Picklable by path, so Beam can ship it."""

  def __init__(self, model_dir: str, max_length: int):
    self.model_dir = model_dir
    self.max_length = max_length
    self._backend = None
    self._lock = threading.Lock()

  def __getstate__(self):
    return {"model_dir": self.model_dir, "max_length": self.max_length, "_backend": None}

  def __setstate__(self, state):
    self.__dict__.update(state)
    self._lock = threading.Lock()

  def load(self) -> "DocumentTokenizer":
    # Threads of one worker share this tokenizer; transformers' lazy imports are not safe to
    # race ("cannot import name 'AutoTokenizer'"), so the first load is serialised.
    with self._lock:
      if self._backend is None:
        self._load()
    return self

  def _load(self):
    # Reuse transformers' loading (tokenizer_config.json, special tokens) but call the Rust
    # backend directly: the Python wrapper costs more than the tokenization for short texts.
    from transformers import AutoTokenizer
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
    hf = AutoTokenizer.from_pretrained(self.model_dir)
    if not hf.is_fast:
      raise ValueError(f"{self.model_dir} has no fast tokenizer (tokenizer.json)")
    backend = hf.backend_tokenizer
    backend.no_padding()
    # One token more than allowed tells truncated documents apart without a second encoding.
    backend.enable_truncation(self.max_length + 1)
    self._eos = hf.eos_token_id
    self.pad_token_id = hf.pad_token_id
    self._backend = backend

  def __call__(self, texts: list[str]) -> Tokenized:
    if self._backend is None:
      self.load()
    encodings = self._backend.encode_batch([PREFIX + t for t in texts])
    ids, truncated = [], np.zeros(len(texts), bool)
    for i, enc in enumerate(encodings):
      doc = np.asarray(enc.ids, np.int32)
      if len(doc) > self.max_length:
        # What truncation to max_length keeps: the first max_length - 1 tokens, then </s>.
        doc = np.concatenate([doc[:self.max_length - 1], doc[-1:]])
        truncated[i] = True
      ids.append(doc)
    return Tokenized(ids=ids, truncated=truncated)
