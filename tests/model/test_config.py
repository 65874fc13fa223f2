"""ModelConfig against transformers' own XLMRobertaConfig."""
from __future__ import annotations

import dataclasses
import json

import pytest
from transformers import XLMRobertaConfig

from model.config import ModelConfig

SHAPE = dict(vocab_size=391, hidden_size=20, num_hidden_layers=1, num_attention_heads=5,
             intermediate_size=28, max_position_embeddings=41)


def _as_config_json(config: XLMRobertaConfig) -> dict:
  """What save_pretrained writes into config.json (string label keys, JSON types)."""
  return json.loads(config.to_json_string(use_diff=False))


@pytest.fixture
def hf_dict() -> dict:
  return _as_config_json(XLMRobertaConfig(num_labels=1, layer_norm_eps=1e-7, **SHAPE))


def test_from_hf_dict_reads_every_shape_field(hf_dict):
  cfg = ModelConfig.from_hf_dict(hf_dict)
  for field in dataclasses.fields(ModelConfig):
    if field.name in hf_dict:
      assert getattr(cfg, field.name) == hf_dict[field.name], field.name
  assert cfg.num_labels == 1 and cfg.type_vocab_size == 2 and cfg.layer_norm_eps == 1e-7
  assert cfg.head_dim == 4 and cfg.max_length == 41 - 1 - 1


def test_round_trip_keeps_every_key(hf_dict):
  cfg = ModelConfig.from_hf_dict(hf_dict)
  back = cfg.to_hf_dict()
  # The fields koedu sets on export: a regression classifier, named as transformers names it.
  assert back["architectures"] == ["XLMRobertaForSequenceClassification"]
  assert back["problem_type"] == "regression"
  for key, value in hf_dict.items():
    if key not in ("architectures", "problem_type"):
      assert back[key] == value, key
  assert ModelConfig.from_hf_dict(back) == ModelConfig.from_hf_dict(json.loads(json.dumps(back)))
  assert ModelConfig.from_hf_dict(back).to_hf_dict() == back


def test_transformers_accepts_the_exported_config(hf_dict):
  exported = ModelConfig.from_hf_dict(hf_dict).to_hf_dict()
  theirs = XLMRobertaConfig(**exported)
  assert theirs.num_labels == 1 and theirs.problem_type == "regression"
  for key in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
              "max_position_embeddings", "vocab_size", "pad_token_id", "layer_norm_eps",
              "hidden_act", "type_vocab_size"):
    assert getattr(theirs, key) == hf_dict[key], key
  # And what transformers then writes, koedu reads back to the same config.
  assert ModelConfig.from_hf_dict(_as_config_json(theirs)) == ModelConfig.from_hf_dict(exported)


def test_config_of_a_saved_checkpoint(checkpoint_dir):
  from transformers import AutoConfig
  cfg = ModelConfig.from_json_file(f"{checkpoint_dir}/config.json")
  theirs = AutoConfig.from_pretrained(checkpoint_dir)
  assert (cfg.hidden_size, cfg.num_attention_heads, cfg.num_hidden_layers, cfg.intermediate_size,
          cfg.vocab_size, cfg.num_labels) == (theirs.hidden_size, theirs.num_attention_heads,
                                               theirs.num_hidden_layers, theirs.intermediate_size,
                                               theirs.vocab_size, theirs.num_labels)
  with open(f"{checkpoint_dir}/config.json", encoding="utf-8") as f:
    assert ModelConfig.from_json_file(f) == cfg


def test_tiny_is_valid_for_transformers_and_shaped_to_show_bugs():
  cfg = ModelConfig.tiny()
  power_of_two = lambda n: n & (n - 1) == 0
  assert cfg.num_attention_heads % 2 and not power_of_two(cfg.hidden_size)
  assert cfg.intermediate_size != 4 * cfg.hidden_size and cfg.head_dim != cfg.num_attention_heads
  theirs = XLMRobertaConfig(**cfg.to_hf_dict())
  assert (theirs.hidden_size, theirs.num_attention_heads) == (cfg.hidden_size, cfg.num_attention_heads)


@pytest.mark.parametrize("change, message", [
    (dict(num_attention_heads=3), "not divisible"),  # 20 / 3
    (dict(num_attention_heads=7), "not divisible"),
    (dict(hidden_act="gelu_new"), "hidden_act"),  # the tanh approximation: other scores
    (dict(hidden_act="relu"), "hidden_act"),
    (dict(max_position_embeddings=2), "max_position_embeddings"),
    (dict(model_type="bert"), "model_type"),
])
def test_bad_configs_raise(hf_dict, change, message):
  with pytest.raises(ValueError, match=message):
    ModelConfig.from_hf_dict({**hf_dict, **change})


@pytest.mark.parametrize("missing", ["hidden_size", "num_hidden_layers", "vocab_size"])
def test_config_without_a_shape_field_raises(hf_dict, missing):
  del hf_dict[missing]
  with pytest.raises(ValueError, match=missing):
    ModelConfig.from_hf_dict(hf_dict)


def test_bad_direct_construction_raises():
  with pytest.raises(ValueError, match="not divisible"):
    ModelConfig.tiny(hidden_size=37)
  with pytest.raises(ValueError, match="hidden_act"):
    ModelConfig.tiny(hidden_act="silu")
  with pytest.raises(ValueError, match="num_labels"):
    ModelConfig.tiny(num_labels=0)
