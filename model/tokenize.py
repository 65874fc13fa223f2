"""Tokenization exactly as `AutoTokenizer(PREFIX + text, truncation=True, max_length=L)` does it,
but through the Rust tokenizer's parallel batch path, with token counts and a truncated flag.

A tokenizer truncates only after tokenizing the whole text, so a 100 MB document would cost
seconds and gigabytes for 512 tokens. Long texts are cut first, at a place proven not to change
the tokens kept: see `cut_long_text`.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import threading

import numpy as np

from model import caches
from model.recipe import PREFIX

log = logging.getLogger(__name__)
# Texts longer than this many characters per allowed token are cut before tokenizing (4 chars
# per token is typical for Korean web text; 16 leaves a wide margin, and a cut that turns out
# short is retried longer).
CUT_CHARS_PER_TOKEN = 16
# Normalizers that map each character on its own, or collapse runs of spaces; pre-tokenizers that
# split at whitespace. With these, the tokens of the words before a space do not depend on what
# follows it (NFKC never composes across a space, which is a stable starter).
_LOCAL_NORMALIZERS = {"NFC", "NFD", "NFKC", "NFKD", "Precompiled", "Lowercase", "Strip",
                      "StripAccents", "Prepend", "BertNormalizer", "Nmt"}
_WHITESPACE_SPLITS = {"Metaspace", "WhitespaceSplit", "Whitespace", "BertPreTokenizer"}
_LOCAL_PRE_TOKENIZERS = _WHITESPACE_SPLITS | {"Punctuation", "Digits", "UnicodeScripts"}
_LOAD_LOCK = threading.Lock()


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

  def __getstate__(self):
    return {"model_dir": self.model_dir, "max_length": self.max_length, "_backend": None}

  def __setstate__(self, state):
    self.__dict__.update(state)

  def load(self) -> "DocumentTokenizer":
    # transformers' lazy imports are not safe to race ("cannot import name 'AutoTokenizer'"):
    # every load in the process is serialised, whichever tokenizer object it is for.
    with _LOAD_LOCK:
      if self._backend is None:
        self._load()
    return self

  def _load(self):
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
    backend, self.pad_token_id = _backend_as_transformers_builds_it(self.model_dir)
    backend.no_padding()
    # One token more than allowed tells truncated documents apart without a second encoding.
    backend.enable_truncation(self.max_length + 1)
    self.vocab_size = backend.get_vocab_size()
    self._cut_safe = cut_is_safe(json.loads(backend.to_str()))
    if not self._cut_safe:
      log.warning("%s: the tokenizer's normalizer or pre-tokenizer is not one koedu can prove a "
                  "cut safe for; long texts are tokenized whole", self.model_dir)
    # encode_batch_fast skips the character offsets nobody reads here (about 15% faster).
    self._encode_batch = getattr(backend, "encode_batch_fast", backend.encode_batch)
    self._backend = backend

  def __call__(self, texts: list[str]) -> Tokenized:
    if self._backend is None:
      self.load()
    longest = CUT_CHARS_PER_TOKEN * self.max_length if self._cut_safe else None
    long = [i for i, t in enumerate(texts) if longest and len(t) > longest]
    batch = [PREFIX + t for t in texts]
    for i in long:
      batch[i] = PREFIX  # encoded apart, from a cut text
    encodings = self._encode_batch(batch)
    for i in long:
      encodings[i] = self.encode_long(texts[i])
    ids, truncated = [], np.zeros(len(texts), bool)
    for i, enc in enumerate(encodings):
      doc = np.asarray(enc.ids, np.int32)
      if len(doc) > self.max_length:
        # What truncation to max_length keeps: the first max_length - 1 tokens, then </s>.
        doc = np.concatenate([doc[:self.max_length - 1], doc[-1:]])
        truncated[i] = True
      ids.append(doc)
    return Tokenized(ids=ids, truncated=truncated)

  def encode_long(self, text: str):
    """The encoding of PREFIX + text (truncated to max_length + 1 tokens), computed from a
    prefix of the text cut at a word boundary, proven by the character offsets to yield the
    same tokens; the whole text only where no such prefix exists.

    The proof: the tokenizer splits words at whitespace and normalizes each character without
    looking past a space (`cut_is_safe`), so the tokens of the words before the cut are those of
    the whole text; if every token kept (the first max_length - 1 after `<s>`) ends before the
    last word of the prefix, which the cut may have shortened, the whole text's first
    max_length - 1 tokens are those, and it has more than max_length tokens, as the prefix has.
    """
    backend, keep = self._backend, self.max_length + 1
    end = CUT_CHARS_PER_TOKEN * self.max_length
    while end < len(text):
      cut = _word_boundary(text, end)
      if cut is not None:
        enc = backend.encode(PREFIX + text[:cut])
        last_word = len(PREFIX) + _last_word_start(text, cut)
        # With truncation at max_length + 1 the encoding is <s>, max_length - 1 tokens, </s>.
        if len(enc.ids) == keep and enc.offsets[keep - 2][1] <= last_word:
          return enc
      end *= 4
    return backend.encode(PREFIX + text)


def tokenizer_cache_dir() -> str:
  return caches.directory("tokenizers")


def _backend_as_transformers_builds_it(model_dir: str):
  """(Rust tokenizer, pad id) exactly as `AutoTokenizer.from_pretrained(model_dir)` builds its
  backend: transformers rewrites some pipelines (XLM-R's normalizer and pre-tokenizer), and
  users' reference scores come from what it builds.

  Importing transformers costs a worker about two seconds; the backend it built is kept, by
  the checksums of the tokenizer files and the transformers version, and read back without it.
  """
  import hashlib
  import importlib.metadata

  import tokenizers
  digest = hashlib.sha256(importlib.metadata.version("transformers").encode())
  for name in sorted(os.listdir(model_dir)):
    if name.startswith(("tokenizer", "special_tokens", "sentencepiece")):
      with open(os.path.join(model_dir, name), "rb") as f:
        digest.update(name.encode() + b"\0" + hashlib.sha256(f.read()).digest())
  cached = os.path.join(tokenizer_cache_dir(), digest.hexdigest()[:32] + ".json")
  if os.path.exists(cached):
    with open(cached, encoding="utf-8") as f:
      kept = json.load(f)
    return tokenizers.Tokenizer.from_str(kept["backend"]), kept["pad_token_id"]
  from transformers import AutoTokenizer
  hf = AutoTokenizer.from_pretrained(model_dir)
  if not hf.is_fast:
    raise ValueError(f"{model_dir} has no fast tokenizer (tokenizer.json)")
  kept = {"backend": hf.backend_tokenizer.to_str(), "pad_token_id": hf.pad_token_id}
  try:
    os.makedirs(tokenizer_cache_dir(), exist_ok=True)
    partial = f"{cached}.{os.getpid()}.{threading.get_ident()}.partial"
    with open(partial, "w", encoding="utf-8") as f:
      json.dump(kept, f)
    os.replace(partial, cached)
  except OSError as err:  # a read-only home: no cache, the same tokenizer
    log.info("tokenizer not cached (%s)", err)
  return tokenizers.Tokenizer.from_str(kept["backend"]), kept["pad_token_id"]


def _word_boundary(text: str, end: int) -> int | None:
  """The last i <= end where text[i] is a space that ends a word (text[i - 1] is no space)."""
  i = text.rfind(" ", 0, end + 1)
  while i > 0 and text[i - 1].isspace():
    i = text.rfind(" ", 0, i - 1)
  return i if i > 0 else None


def _last_word_start(text: str, cut: int) -> int:
  """Where the last word of text[:cut] begins, with the whitespace before it (that whitespace
  becomes part of the word's first token under Metaspace)."""
  i = cut
  while i > 0 and not text[i - 1].isspace():
    i -= 1
  while i > 0 and text[i - 1].isspace():
    i -= 1
  return i


def cut_is_safe(tokenizer: dict) -> bool:
  """Whether the tokenizer (tokenizer.json as a dict) is one for which a cut at a space that ends
  a word leaves the tokens before it as the whole text has them."""
  def normalizer_ok(n) -> bool:
    if n is None:
      return True
    if n["type"] == "Sequence":
      return all(normalizer_ok(m) for m in n["normalizers"])
    if n["type"] == "Replace":  # XLM-R collapses runs of spaces: a run the cut does not split
      return n.get("pattern", {}).get("Regex") in (" {2,}",) and n.get("content") == " "
    return n["type"] in _LOCAL_NORMALIZERS

  def pre_ok(p) -> bool:
    if p["type"] == "Sequence":
      return all(pre_ok(q) for q in p["pretokenizers"])
    if p["type"] == "Metaspace":
      return p.get("split", True)
    return p["type"] in _LOCAL_PRE_TOKENIZERS

  def splits(p) -> bool:
    if p["type"] == "Sequence":
      return any(splits(q) for q in p["pretokenizers"])
    return p["type"] in _WHITESPACE_SPLITS and p.get("split", True)

  pre = tokenizer.get("pre_tokenizer")
  return (tokenizer.get("model", {}).get("type") in ("Unigram", "BPE", "WordPiece")
          and normalizer_ok(tokenizer.get("normalizer")) and pre is not None and pre_ok(pre)
          and splits(pre))
