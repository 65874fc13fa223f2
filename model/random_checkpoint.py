"""Random but real Hugging Face checkpoints: for trying koedu offline, tests and benchmarks.

    python -m model.random_checkpoint DIR [--size tiny|base|large] [--seed 0]

writes what users point `--model` at: `config.json` and `model.safetensors` of a random
`XLMRobertaForSequenceClassification(num_labels=1)` saved by transformers' `save_pretrained`,
and a Unigram tokenizer with XLM-R's special tokens, trained here on Korean sentences made from
a word list (no download). "base" and "large" have XLM-R's shapes, its 250,002-row embedding
table included (the tokenizer uses its first few hundred rows); "tiny" runs anywhere in
seconds. Building needs torch (`pip install -e '.[test]'`); scoring with the result does not.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil

# Common Korean words and endings; sentences built from them give the tokenizer real Hangul
# statistics without shipping a corpus.
WORDS = ("광합성 식물 햇빛 에너지 물 이산화탄소 포도당 산소 세포 엽록체 역사 조선 세종대왕 한글 "
         "백성 문자 창제 수학 방정식 함수 그래프 기울기 삼각형 넓이 공식 학생 선생님 학교 수업 "
         "시험 공부 문법 주어 서술어 조사 어미 경제 시장 가격 수요 공급 물가 정부 정책 뉴스 "
         "기자 발표 오늘 내일 어제 서울 부산 날씨 비 눈 할인 특가 무료 배송 이벤트 쿠폰 구매 "
         "상품 최저가 회원 가입 로그인 비밀번호 약관 개인정보 쿠키 저작권 게시판 댓글 ㅋㅋ "
         "ㅎㅎ 진짜 대박 그냥 근데 저는 우리는 그리고 하지만 따라서 예를 들어 이다 있다 없다 "
         "합니다 했습니다 입니다 됩니다 하는 하고 해서 에서 으로 에게 까지 부터 보다 처럼").split()
SPECIALS = ["<s>", "<pad>", "</s>", "<unk>"]
XLMR_VOCAB_SIZE = 250002
XLMR_POSITIONS = 514  # 512 tokens after RoBERTa's offset of 2
SIZES = {
    # The tests' shape: small and odd, so shape bugs show; positions for 512-token documents.
    "tiny": dict(hidden_size=36, num_hidden_layers=3, num_attention_heads=3, intermediate_size=52,
                 max_position_embeddings=XLMR_POSITIONS),
    "base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                 max_position_embeddings=XLMR_POSITIONS, vocab_size=XLMR_VOCAB_SIZE),
    "large": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
                  max_position_embeddings=XLMR_POSITIONS, vocab_size=XLMR_VOCAB_SIZE),
}


def korean_sentences(n: int, seed: int = 0, min_words: int = 3, max_words: int = 40) -> list[str]:
  rng = random.Random(seed)
  return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(min_words, max_words))) + "."
          for _ in range(n)]


def train_tokenizer(out_dir: str, vocab_size: int = 600, seed: int = 0) -> int:
  """Writes tokenizer.json + tokenizer_config.json as XLM-R has them; returns the vocab size."""
  from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
  from transformers import PreTrainedTokenizerFast

  tok = Tokenizer(models.Unigram())
  tok.normalizer = normalizers.NFKC()
  tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
  tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
  trainer = trainers.UnigramTrainer(vocab_size=vocab_size, special_tokens=SPECIALS,
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


def save_checkpoint(out_dir: str, *, hidden_size: int = 36, num_hidden_layers: int = 3,
                    num_attention_heads: int = 3, intermediate_size: int = 52,
                    max_position_embeddings: int = 130, seed: int = 0,
                    initializer_range: float = 0.2, tokenizer_dir: str | None = None,
                    vocab_size: int | None = None, encoder_only: bool = False, **extra) -> str:
  """A random classifier saved by transformers itself, with the tokenizer beside it (trained
  here, or copied from `tokenizer_dir`). `vocab_size` None: the tokenizer's.

  A large initializer_range keeps scores spread out, so parity tests compare real signal.
  """
  import torch
  from transformers import XLMRobertaConfig, XLMRobertaForSequenceClassification, XLMRobertaModel

  os.makedirs(out_dir, exist_ok=True)
  if tokenizer_dir is None:
    n_vocab = train_tokenizer(out_dir)
  else:
    for name in os.listdir(tokenizer_dir):
      if name.startswith(("tokenizer", "special_tokens")):
        shutil.copy(os.path.join(tokenizer_dir, name), out_dir)
    with open(os.path.join(out_dir, "tokenizer.json"), encoding="utf-8") as f:
      n_vocab = len(json.load(f)["model"]["vocab"]) + 1  # + <mask>, an added token
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


def make(out_dir: str, size: str = "tiny", seed: int = 0, initializer_range: float | None = None,
         tokenizer_dir: str | None = None) -> str:
  """A random classifier of one of SIZES. Its initializer range: 0.2 for "tiny" (scores spread
  over a few units), XLM-R's 0.02 for the real shapes."""
  if size not in SIZES:
    raise ValueError(f"size must be one of {sorted(SIZES)}, got {size!r}")
  if initializer_range is None:
    initializer_range = 0.2 if size == "tiny" else 0.02
  return save_checkpoint(out_dir, **SIZES[size], seed=seed, initializer_range=initializer_range,
                         tokenizer_dir=tokenizer_dir)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("out_dir", help="the model directory to write")
  parser.add_argument("--size", default="tiny", choices=sorted(SIZES))
  parser.add_argument("--seed", type=int, default=0, help="torch's seed for the weights")
  parser.add_argument("--initializer_range", type=float, default=None,
                      help="std of the random weights (default 0.2 for tiny, 0.02 otherwise)")
  args = parser.parse_args(argv)
  print(make(args.out_dir, args.size, args.seed, args.initializer_range))
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
