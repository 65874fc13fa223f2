"""Tiny but real Hugging Face checkpoints for tests and benchmarks.

The real KoE5 weights are not reachable offline, so these build the same on-disk format users
have: a Unigram tokenizer trained here with XLM-R's special tokens, and a random
`XLMRobertaForSequenceClassification(num_labels=1)` written by transformers' `save_pretrained`.
"""
from __future__ import annotations

import json
import os
import random

# Common Korean words and endings; sentences built from them give the tokenizer real Hangul
# statistics without shipping a corpus.
_WORDS = ("광합성 식물 햇빛 에너지 물 이산화탄소 포도당 산소 세포 엽록체 역사 조선 세종대왕 한글 "
          "백성 문자 창제 수학 방정식 함수 그래프 기울기 삼각형 넓이 공식 학생 선생님 학교 수업 "
          "시험 공부 문법 주어 서술어 조사 어미 경제 시장 가격 수요 공급 물가 정부 정책 뉴스 "
          "기자 발표 오늘 내일 어제 서울 부산 날씨 비 눈 할인 특가 무료 배송 이벤트 쿠폰 구매 "
          "상품 최저가 회원 가입 로그인 비밀번호 약관 개인정보 쿠키 저작권 게시판 댓글 ㅋㅋ "
          "ㅎㅎ 진짜 대박 그냥 근데 저는 우리는 그리고 하지만 따라서 예를 들어 이다 있다 없다 "
          "합니다 했습니다 입니다 됩니다 하는 하고 해서 에서 으로 에게 까지 부터 보다 처럼").split()
_SPECIALS = ["<s>", "<pad>", "</s>", "<unk>"]


def korean_sentences(n: int, seed: int = 0, min_words: int = 3, max_words: int = 40) -> list[str]:
  rng = random.Random(seed)
  return [" ".join(rng.choice(_WORDS) for _ in range(rng.randint(min_words, max_words))) + "."
          for _ in range(n)]


def train_tokenizer(out_dir: str, vocab_size: int = 600, seed: int = 0) -> int:
  """Writes tokenizer.json + tokenizer_config.json as XLM-R has them; returns the vocab size."""
  from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
  from transformers import PreTrainedTokenizerFast

  tok = Tokenizer(models.Unigram())
  tok.normalizer = normalizers.NFKC()
  tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
  tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
  trainer = trainers.UnigramTrainer(vocab_size=vocab_size, special_tokens=_SPECIALS,
                                    unk_token="<unk>", show_progress=False)
  text = korean_sentences(3000, seed) + ["passage: query: 0123456789 abc ABC .,!?"] * 20
  tok.train_from_iterator(text, trainer)
  tok.add_special_tokens(["<mask>"])  # last id, as in XLM-R
  tok.post_processor = processors.TemplateProcessing(
      single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>",
      special_tokens=[("<s>", 0), ("</s>", 2)])
  fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                 unk_token="<unk>", sep_token="</s>", cls_token="<s>",
                                 pad_token="<pad>", mask_token="<mask>", model_max_length=512)
  fast.save_pretrained(out_dir)
  # Name the class the real checkpoint names, so AutoTokenizer takes the same path as for KoE5.
  config_path = os.path.join(out_dir, "tokenizer_config.json")
  with open(config_path, encoding="utf-8") as f:
    tokenizer_config = json.load(f)
  tokenizer_config["tokenizer_class"] = "XLMRobertaTokenizer"
  with open(config_path, "w", encoding="utf-8") as f:
    json.dump(tokenizer_config, f, indent=2)
  return tok.get_vocab_size()


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


def save_checkpoint(out_dir: str, *, hidden_size: int = 36, num_hidden_layers: int = 3,
                    num_attention_heads: int = 3, intermediate_size: int = 52,
                    max_position_embeddings: int = 130, seed: int = 0,
                    initializer_range: float = 0.2, tokenizer_dir: str | None = None,
                    vocab_size: int | None = None, encoder_only: bool = False, **extra) -> str:
  """A random classifier saved by transformers itself, with the tokenizer beside it.

  A large initializer_range keeps scores spread out, so parity tests compare real signal.
  """
  import shutil

  import torch
  from transformers import XLMRobertaConfig, XLMRobertaForSequenceClassification, XLMRobertaModel

  os.makedirs(out_dir, exist_ok=True)
  if tokenizer_dir is None:
    n_vocab = train_tokenizer(out_dir)
  else:
    for name in os.listdir(tokenizer_dir):
      if name.startswith(("tokenizer", "special_tokens")):
        shutil.copy(os.path.join(tokenizer_dir, name), out_dir)
    n_vocab = json.load(open(os.path.join(out_dir, "tokenizer.json")))["model"]["vocab"].__len__() + 1
  torch.manual_seed(seed)
  config = XLMRobertaConfig(
      vocab_size=vocab_size or n_vocab, hidden_size=hidden_size, num_hidden_layers=num_hidden_layers,
      num_attention_heads=num_attention_heads, intermediate_size=intermediate_size,
      max_position_embeddings=max_position_embeddings, type_vocab_size=1, pad_token_id=1,
      bos_token_id=0, eos_token_id=2, layer_norm_eps=1e-5, num_labels=1,
      initializer_range=initializer_range, **extra)
  cls = XLMRobertaModel if encoder_only else XLMRobertaForSequenceClassification
  model = cls(config).eval()
  model.save_pretrained(out_dir)
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


if __name__ == "__main__":
  import sys
  if len(sys.argv) != 2:
    sys.exit("usage: python -m tests.checkpoints OUT_DIR  (a tiny random classifier, for trying koedu offline)")
  print(save_checkpoint(sys.argv[1], max_position_embeddings=514))
