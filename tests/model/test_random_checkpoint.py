"""The product's random-checkpoint maker, as a user runs it offline."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from model import random_checkpoint
from model.checkpoint import read_config
from model.runner import RunnerConfig, load_runner
from model.tokenize import DocumentTokenizer


def test_the_command_writes_a_checkpoint_koedu_scores_at_512_tokens(tmp_path, capsys):
  out = str(tmp_path / "tiny-model")
  assert random_checkpoint.main([out, "--seed", "3"]) == 0
  assert capsys.readouterr().out.strip() == out
  assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= set(os.listdir(out))
  cfg = read_config(out)
  tiny = random_checkpoint.SIZES["tiny"]
  assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads, cfg.intermediate_size) == \
      (tiny["hidden_size"], tiny["num_hidden_layers"], tiny["num_attention_heads"], tiny["intermediate_size"])
  assert json.load(open(os.path.join(out, "config.json")))["architectures"] == ["XLMRobertaForSequenceClassification"]
  texts = random_checkpoint.korean_sentences(6, seed=1, min_words=300, max_words=800)
  ids = DocumentTokenizer(out, 512)(texts).ids
  assert max(len(d) for d in ids) == 512  # the tiny model takes documents of the real length
  scores = load_runner(out, RunnerConfig()).run(ids)
  assert np.isfinite(scores).all() and np.ptp(scores) > 0
  with pytest.raises(SystemExit):
    random_checkpoint.main([out, "--size", "huge"])
