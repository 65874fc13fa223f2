"""Our NNX classifier against transformers' XLMRobertaForSequenceClassification (PyTorch, eval).

Tiny random checkpoints written by save_pretrained, loaded the way users load them
(hub.fetch + checkpoint.load_classifier), scored as a right-padded batch through hf_forward and
as tokenized documents through the compiled EncoderRunner, packed and unpacked, under every
attention model/runtime.py can choose.
"""
from __future__ import annotations

import os
import shutil
import types

import numpy as np
import pytest
from transformers import AutoTokenizer

from model import gpu_attention, hub, runtime
from model.checkpoint import load_classifier
from model.recipe import PREFIX
from model.runner import EncoderRunner, RunnerConfig
from model.tokenize import DocumentTokenizer
from tests.model.reference import (hf_forward, mixed_texts, torch_classifier, torch_document_scores,
                                   torch_scores)

TOLERANCE = 1e-4
# The GPU kernels run on GPUs only (tests/model/test_gpu.py checks Pallas's in its interpreter).
CPU_ATTENTIONS = [a for a in runtime.ATTENTIONS if a not in gpu_attention.GPU_ATTENTIONS]

# name -> (save_checkpoint arguments, or None for transformers' config defaults; max_length the
# documents are truncated to). Odd widths, head sizes 4..15, FFN never 4 x hidden.
CONFIGS = {
    "h36-a3-l3-ff52": (dict(), 40),
    "h20-a5-l1-ff28": (dict(hidden_size=20, num_attention_heads=5, num_hidden_layers=1,
                            intermediate_size=28, seed=1), 33),
    # 48 usable positions and max_length 48: the last row of the position table is used.
    "h42-a7-l2-ff66-pos50": (dict(hidden_size=42, num_attention_heads=7, num_hidden_layers=2,
                                  intermediate_size=66, max_position_embeddings=50, seed=2), 48),
    # XLMRobertaConfig's own defaults where save_checkpoint pins them: eps 1e-12, 2 token types.
    "h30-a2-l2-ff44-eps1e-12-types2": (None, 37),
}


def _save_with_transformers_defaults(out: str, tokenizer_dir: str) -> str:
  import torch
  from transformers import XLMRobertaConfig, XLMRobertaForSequenceClassification
  for name in os.listdir(tokenizer_dir):
    shutil.copy(os.path.join(tokenizer_dir, name), out)
  torch.manual_seed(4)
  config = XLMRobertaConfig(vocab_size=len(AutoTokenizer.from_pretrained(tokenizer_dir)),
                            hidden_size=30, num_attention_heads=2, num_hidden_layers=2,
                            intermediate_size=44, max_position_embeddings=70, num_labels=1,
                            initializer_range=0.2)
  assert config.layer_norm_eps == 1e-12 and config.type_vocab_size == 2
  XLMRobertaForSequenceClassification(config).eval().save_pretrained(out)
  return out


@pytest.fixture(scope="module", params=list(CONFIGS))
def ref(request, make_checkpoint, tokenizer_dir, tmp_path_factory):
  kwargs, max_length = CONFIGS[request.param]
  if kwargs is None:
    model_dir = _save_with_transformers_defaults(str(tmp_path_factory.mktemp("defaults")), tokenizer_dir)
  else:
    model_dir = make_checkpoint(**kwargs)
  model_dir = hub.fetch(hub.describe(model_dir))
  cfg, model = load_classifier(model_dir)
  reference = torch_classifier(model_dir)
  assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.layer_norm_eps) == (
      reference.config.hidden_size, reference.config.num_hidden_layers, reference.config.layer_norm_eps)
  return types.SimpleNamespace(name=request.param, dir=model_dir, cfg=cfg, model=model,
                               torch=reference, max_length=max_length,
                               tokenizer=AutoTokenizer.from_pretrained(model_dir))


def model_with(ref, attention: str):
  """(runtime, our model of `ref`) in fp32 with this attention."""
  rt = runtime.resolve(ref.cfg, "float32", attention)
  return rt, load_classifier(ref.dir, **rt.model_kwargs())[1]


@pytest.mark.parametrize("attention", CPU_ATTENTIONS)
def test_padded_batch_matches_transformers(ref, attention, max_abs_diff):
  # Truncated at the checkpoint's own limit, so the longest rows use every position row.
  enc = ref.tokenizer([PREFIX + t for t in mixed_texts(seed=3)], padding=True, truncation=True,
                      max_length=ref.cfg.max_length, return_tensors="np")
  mask = enc["attention_mask"]
  assert (mask == 0).any(), "no padding in the batch"
  assert mask.sum(1).max() == ref.cfg.max_length, "no document reaches max_length"
  ours = np.asarray(hf_forward(model_with(ref, attention)[1], enc["input_ids"], mask))[:, 0]
  theirs = torch_scores(ref.torch, enc["input_ids"], mask)
  assert np.ptp(theirs) > 1e-2, "reference scores barely differ; parity would prove little"
  assert max_abs_diff(f"{ref.name} padded batch, {attention} attention", ours, theirs) <= TOLERANCE


def _boundary_texts(tokenizer, max_length: int) -> list[str]:
  """Prefixes of a long text whose full encoding is max_length - 2 .. max_length + 2 tokens."""
  text = " ".join(mixed_texts(seed=11)[-3:])
  found = {}
  for end in range(1, len(text)):
    n = len(tokenizer(PREFIX + text[:end])["input_ids"])
    if abs(n - max_length) <= 2:
      found.setdefault(n, text[:end])
    if n > max_length + 2:
      break
  assert {max_length - 1, max_length, max_length + 1} <= found.keys(), sorted(found)
  return list(found.values())


# What web text holds besides words: blanks, full-width forms NFKC folds, emoji, control and
# zero-width characters, a long run without spaces, a literal special token.
ODD_TEXTS = [" ", "\n\t ", "ＡＢＣ　１２３", "🙂👍 좋아요", "a\u0000b\u200bc", "가" * 300,
             "<s> passage: </s>", "query: 광합성"]


def test_document_tokenizer_matches_autotokenizer(ref):
  texts = mixed_texts(seed=5) + ODD_TEXTS + _boundary_texts(ref.tokenizer, ref.max_length)
  ours = DocumentTokenizer(ref.dir, ref.max_length)(texts)
  for text, ids, truncated in zip(texts, ours.ids, ours.truncated):
    expected = ref.tokenizer(PREFIX + text, truncation=True, max_length=ref.max_length)["input_ids"]
    assert ids.tolist() == expected, text
    assert truncated == (len(ref.tokenizer(PREFIX + text)["input_ids"]) > ref.max_length), text
  assert ours.truncated.any() and not ours.truncated.all()


def test_document_tokenizer_is_shipped_by_pickle(checkpoint_dir):
  import pickle
  tokenizer = DocumentTokenizer(checkpoint_dir, 21)
  texts = mixed_texts(seed=9)
  before = tokenizer(texts)  # loads the backend, which must not travel
  copy = pickle.loads(pickle.dumps(tokenizer))
  assert copy._backend is None and copy.max_length == 21
  after = copy(texts)
  assert [a.tolist() for a in after.ids] == [b.tolist() for b in before.ids]
  assert np.array_equal(after.truncated, before.truncated)
  with pytest.raises(ValueError, match="max_length"):
    RunnerConfig(max_length=2)


@pytest.mark.parametrize("attention", CPU_ATTENTIONS)
@pytest.mark.parametrize("pack", [True, False], ids=["packed", "unpacked"])
def test_scorer_matches_transformers(ref, pack, attention, max_abs_diff):
  texts = mixed_texts(seed=7)
  tokenized = DocumentTokenizer(ref.dir, ref.max_length)(texts)
  assert tokenized.truncated.sum() >= 3
  # The reference sees transformers' own tokenization of the same texts, one unpadded document
  # at a time.
  expected_ids = [ref.tokenizer(PREFIX + t, truncation=True, max_length=ref.max_length)["input_ids"]
                  for t in texts]
  assert [ids.tolist() for ids in tokenized.ids] == expected_ids
  theirs = torch_document_scores(ref.torch, expected_ids)
  rt, model = model_with(ref, attention)
  runner = EncoderRunner(model, rt, RunnerConfig(max_length=ref.max_length, row_lengths=(11, 24),
                                                 tokens_per_device=2 * ref.max_length + 5,
                                                 smallest_batch_fraction=2, pack=pack))
  ours = runner.run(tokenized.ids)
  label = (f"{ref.name} scorer {'packed' if pack else 'unpacked'} {attention} attention "
           f"max_length {ref.max_length}")
  assert max_abs_diff(label, ours, theirs) <= TOLERANCE
