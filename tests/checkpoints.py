"""Tiny but real Hugging Face checkpoints for the tests, and the shipped sample corpus.

The real KoE5 weights are not reachable offline: the product's model/random_checkpoint.py builds
the same on-disk format users have (a Unigram tokenizer trained here, a random
`XLMRobertaForSequenceClassification(num_labels=1)` saved by transformers). Here: what only the
tests need beside it, an XLM-R-like SentencePiece tokenizer and the sample corpus read plainly.
"""
from __future__ import annotations

import json
import os

from model.random_checkpoint import korean_sentences, save_checkpoint, train_tokenizer  # noqa: F401


def train_xlmr_like_tokenizer(out_dir: str, seed: int = 0) -> str:
  """A SentencePiece Unigram model trained here with XLM-R's normalization rules (nmt_nfkc, the
  precompiled character map), saved as XLM-R's fast tokenizer with XLM-R's tokenizer.json
  pipeline (Precompiled + collapse of space runs, Metaspace): what users load for KoE5, small."""
  import sentencepiece
  from sentencepiece import sentencepiece_model_pb2
  from tokenizers import Regex, normalizers, pre_tokenizers
  from transformers import XLMRobertaTokenizerFast
  os.makedirs(out_dir, exist_ok=True)
  texts = korean_sentences(2000, seed=seed) + ["ＡＢＣ　１２３ ﬃ ㍿ café naïve Straße 東京 ✓ 🙂 ①"] * 5
  prefix = os.path.join(out_dir, "sentencepiece.bpe")
  sentencepiece.SentencePieceTrainer.train(
      sentence_iterator=iter(texts), model_prefix=prefix, vocab_size=400, hard_vocab_limit=False,
      model_type="unigram", normalization_rule_name="nmt_nfkc", pad_id=1, unk_id=3, bos_id=0,
      eos_id=2, minloglevel=2)
  proto = sentencepiece_model_pb2.ModelProto()
  with open(prefix + ".model", "rb") as f:
    proto.ParseFromString(f.read())
  fast = XLMRobertaTokenizerFast(vocab_file=prefix + ".model")
  fast.backend_tokenizer.normalizer = normalizers.Sequence([
      normalizers.Precompiled(proto.normalizer_spec.precompiled_charsmap),
      normalizers.Replace(Regex(" {2,}"), " ")])
  fast.backend_tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
  fast.save_pretrained(out_dir)
  return out_dir


SAMPLE_CORPUS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples", "corpus")


def sample_corpus_records() -> dict[tuple[str, int], dict]:
  """(shard path, row) -> record of the shipped sample corpus, read without any koedu code."""
  import gzip

  import pyarrow.parquet as pq
  records = {}
  for name in sorted(os.listdir(SAMPLE_CORPUS)):
    path = os.path.join(SAMPLE_CORPUS, name)
    if name.endswith(".parquet"):
      rows = pq.read_table(path).to_pylist()
    else:
      opener = gzip.open if name.endswith(".gz") else open
      with opener(path, "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    records.update({(path, i): r for i, r in enumerate(rows)})
  return records
