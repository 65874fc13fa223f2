"""Long texts are cut before tokenizing, and the cut never changes a token.

A tokenizer truncates only after tokenizing everything, so koedu cuts a long text first, at a
word boundary, and checks by the character offsets that every token kept ends before the cut's
last word. Here the result is held against transformers tokenizing the whole text, on texts
built to break a careless cut: Korean, mixed scripts, runs of every kind of whitespace,
characters NFKC expands, no space for thousands of characters, a cut landing inside all of them.
"""
from __future__ import annotations

import json
import random

import pytest
from transformers import AutoTokenizer

from model import tokenize
from model.recipe import PREFIX
from model.tokenize import DocumentTokenizer, cut_is_safe
from tests.checkpoints import korean_sentences, train_xlmr_like_tokenizer

ODD = ["ﬃ", "㍿", "①", "ＡＢＣ", "　", "\u00a0", "\t", "\n", "  ", " \u0301", "´", "¨", "🙂",
       "東京", "Straße", "\u200b", "ｶﾞ", "가\u0301"]


def long_texts(seed: int, length: int) -> list[str]:
  """Texts of about `length` characters (one of them short)."""
  rng = random.Random(seed)
  korean = " ".join(korean_sentences(length // 60, seed=seed))[:length]
  mixed = "".join(rng.choice([w + " " for w in korean.split()[:50]] + ODD) for _ in range(length // 4))
  spaces = "  \t \u3000\n ".join(korean.split())
  expanding = " ".join(rng.choice(["ﬃ", "㍿", "①", "ＡＢＣ", "ｶﾞ"]) * rng.randint(1, 9) for _ in range(length // 12))
  unbroken = "가나다라" * (length // 8) + " " + korean  # no word boundary for a long stretch
  return [korean, mixed, spaces, expanding, unbroken, ("x " * (length // 2)) + korean, korean[:length // 40]]


@pytest.fixture(scope="module", params=["unigram-nfkc", "xlm-r-precompiled"])
def tokenizer_dir(request, tmp_path_factory, tokenizer_dir):
  if request.param == "unigram-nfkc":
    return tokenizer_dir  # the session's test tokenizer
  return train_xlmr_like_tokenizer(str(tmp_path_factory.mktemp("xlmr_tokenizer")))


@pytest.mark.parametrize("max_length", [16, 64, 512])
def test_cut_gives_the_ids_of_the_whole_text(tokenizer_dir, max_length, monkeypatch):
  hf = AutoTokenizer.from_pretrained(tokenizer_dir)
  ours = DocumentTokenizer(tokenizer_dir, max_length).load()
  assert ours._cut_safe
  texts = long_texts(max_length, 3 * tokenize.CUT_CHARS_PER_TOKEN * max_length)
  encoded = []
  real_encode = ours._backend.encode
  monkeypatch.setattr(ours, "_backend", type("Spy", (), {
      "encode": lambda self, text: encoded.append(len(text)) or real_encode(text)})())
  got = ours(texts)
  longest = tokenize.CUT_CHARS_PER_TOKEN * max_length
  cut = [n for n in encoded if n < 4 * longest + len(PREFIX)]
  assert len(cut) >= 4, f"few texts were cut: {encoded}"
  for text, ids, truncated in zip(texts, got.ids, got.truncated):
    whole = hf(PREFIX + text)["input_ids"]
    assert ids.tolist() == hf(PREFIX + text, truncation=True, max_length=max_length)["input_ids"], text[:80]
    assert truncated == (len(whole) > max_length)


def test_a_tokenizer_koedu_cannot_reason_about_is_never_cut(tokenizer_dir, tmp_path):
  spec = json.load(open(f"{tokenizer_dir}/tokenizer.json"))
  assert cut_is_safe(spec)
  odd = dict(spec, normalizer={"type": "Replace", "pattern": {"Regex": "a+"}, "content": "b"})
  assert not cut_is_safe(odd)
  assert not cut_is_safe(dict(spec, pre_tokenizer={"type": "ByteLevel", "add_prefix_space": True}))
  assert not cut_is_safe(dict(spec, pre_tokenizer=None))


def test_cut_texts_cost_what_their_prefix_costs(tokenizer_dir):
  import time
  ours = DocumentTokenizer(tokenizer_dir, 512).load()
  text = " ".join(korean_sentences(200, seed=3)) + " "
  start = time.perf_counter()
  (ids,) = ours([text * 3000]).ids  # about 10 million characters
  assert len(ids) == 512 and time.perf_counter() - start < 5
  assert tokenize.CUT_CHARS_PER_TOKEN * 512 < len(text) * 3000


def test_the_backend_kept_without_transformers_is_the_one_transformers_builds(tokenizer_dir, tmp_path, monkeypatch):
  monkeypatch.setenv("KOEDU_TOKENIZER_CACHE", str(tmp_path))
  texts = long_texts(1, 2000) + ["ＡＢＣ　１２３  ﬃ ㍿ 광합성"]
  first = DocumentTokenizer(tokenizer_dir, 64).load()  # through transformers, then kept
  (kept,) = list(tmp_path.iterdir())
  assert json.loads(json.load(open(kept))["backend"]) == json.loads(
      AutoTokenizer.from_pretrained(tokenizer_dir).backend_tokenizer.to_str())
  second = DocumentTokenizer(tokenizer_dir, 64).load()  # read back
  assert [a.tolist() for a in first(texts).ids] == [b.tolist() for b in second(texts).ids]
  assert second.pad_token_id == AutoTokenizer.from_pretrained(tokenizer_dir).pad_token_id
