"""Weights in and out: every format koedu reads gives transformers' scores, and what koedu
writes transformers reads back bit for bit."""
from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from model import checkpoint, convert
from model.checkpoint import PickleRefused, load_classifier
from model.config import ModelConfig
from tests.model.reference import hf_forward, hf_position_ids, mixed_texts, params_of, torch_classifier, torch_scores


@pytest.fixture(scope="module")
def source(checkpoint_dir, tokenizer):
  """The default tiny checkpoint, its torch model, and a padded batch with its torch scores."""
  from model.recipe import PREFIX
  model = torch_classifier(checkpoint_dir)
  enc = tokenizer([PREFIX + t for t in mixed_texts(seed=1)], padding=True, truncation=True,
                  max_length=50, return_tensors="np")
  batch = (enc["input_ids"], enc["attention_mask"])
  assert (batch[1] == 0).any()
  return checkpoint_dir, model, batch, torch_scores(model, *batch)


def _nnx_scores(model_dir: str, batch, **kwargs) -> np.ndarray:
  _, model = load_classifier(model_dir, **kwargs)
  return np.asarray(hf_forward(model, *batch))[:, 0]


def _config_only(src: str, dst: str) -> str:
  os.makedirs(dst, exist_ok=True)
  shutil.copy(os.path.join(src, checkpoint.CONFIG), dst)
  return dst


def test_export_round_trip_through_transformers(source, tmp_path, max_abs_diff):
  from transformers import AutoModelForSequenceClassification
  model_dir, original, batch, expected = source
  cfg, model = load_classifier(model_dir)
  out = str(tmp_path / "exported")
  checkpoint.save_hf(out, cfg, params_of(model), tokenizer_dir=model_dir)

  reloaded, info = AutoModelForSequenceClassification.from_pretrained(out, output_loading_info=True)
  assert type(reloaded).__name__ == "XLMRobertaForSequenceClassification"
  assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
  assert reloaded.config.num_labels == 1 and reloaded.config.problem_type == "regression"
  theirs = original.state_dict()
  for name, tensor in reloaded.eval().state_dict().items():
    assert torch.equal(tensor, theirs[name]), name
  # The exported file itself: the same tensors under the same names, bit for bit.
  written, source_file = load_file(os.path.join(out, checkpoint.SAFETENSORS)), load_file(
      os.path.join(model_dir, checkpoint.SAFETENSORS))
  assert written.keys() == source_file.keys()
  for name in written:
    assert written[name].dtype == source_file[name].dtype and np.array_equal(written[name], source_file[name]), name
  assert max_abs_diff("export -> transformers", torch_scores(reloaded.eval(), *batch), expected) <= 1e-5
  # The tokenizer went along, so the directory is a complete --model.
  assert os.path.exists(os.path.join(out, "tokenizer.json"))
  assert max_abs_diff("export -> koedu", _nnx_scores(out, batch), expected) <= 1e-4


def _flax_layout(state: dict[str, torch.Tensor]) -> dict:
  """transformers' retired Flax layout, written here from the torch names independently of
  model/convert.py: kernels (in, out), `embedding` and `scale` leaves, layers keyed "0", "1"..."""
  tree: dict = {}
  for name, tensor in state.items():
    if name.endswith("position_ids"):
      continue
    *parents, leaf = name.split(".")
    value = tensor.detach().numpy()
    if leaf == "weight":
      if parents[-1].endswith("_embeddings"):
        leaf = "embedding"
      elif parents[-1] == "LayerNorm":
        leaf = "scale"
      else:
        leaf, value = "kernel", value.T
    node = tree
    for p in parents:
      node = node.setdefault(p, {})
    node[leaf] = np.ascontiguousarray(value)
  return tree


def test_flax_msgpack_loads_with_same_scores(source, tmp_path, max_abs_diff):
  from flax import serialization
  model_dir, original, batch, expected = source
  tree = _flax_layout(original.state_dict())
  assert tree["roberta"]["encoder"]["layer"]["0"]["attention"]["self"]["query"]["kernel"].shape == (36, 36)
  assert tree["classifier"]["out_proj"]["kernel"].shape == (36, 1)
  out = _config_only(model_dir, str(tmp_path / "flax"))
  with open(os.path.join(out, checkpoint.FLAX_MSGPACK), "wb") as f:
    f.write(serialization.msgpack_serialize(tree))
  assert sorted(os.listdir(out)) == [checkpoint.CONFIG, checkpoint.FLAX_MSGPACK]
  assert max_abs_diff("flax_model.msgpack", _nnx_scores(out, batch), expected) <= 1e-4


def test_sharded_safetensors_load(source, tmp_path, max_abs_diff):
  model_dir, original, batch, expected = source
  out = str(tmp_path / "sharded")
  original.save_pretrained(out, max_shard_size="40KB")
  shards = [n for n in os.listdir(out) if n.endswith(".safetensors")]
  assert checkpoint.SAFETENSORS_INDEX in os.listdir(out) and len(shards) >= 3, os.listdir(out)
  assert len(checkpoint.weight_files(out)) == len(shards)
  assert max_abs_diff("sharded safetensors", _nnx_scores(out, batch), expected) <= 1e-4


def test_encoder_only_checkpoint_converts_without_head(make_checkpoint, tokenizer, max_abs_diff):
  from transformers import AutoModel
  from model.recipe import PREFIX
  model_dir = make_checkpoint(encoder_only=True, hidden_size=20, num_attention_heads=5,
                              num_hidden_layers=2, intermediate_size=28, seed=5)
  cfg = checkpoint.read_config(model_dir)
  state = checkpoint.read_hf_state(model_dir)
  assert not any(name.startswith(("roberta.", "classifier.")) for name in state)  # as XLMRobertaModel saves
  with pytest.raises(ValueError, match="lacks"):
    convert.hf_to_nnx(state, cfg)
  params = convert.hf_to_nnx(state, cfg, require_head=False)
  assert not any(path[0] == "head" for path in params)
  # The converted encoder computes what transformers' encoder computes, given any head.
  rng = np.random.default_rng(0)
  head = {("head", "dense", "kernel"): (20, 20), ("head", "dense", "bias"): (20,),
          ("head", "out_proj", "kernel"): (20, 1), ("head", "out_proj", "bias"): (1,)}
  model = convert.model_from_params(cfg, {**params, **{p: rng.normal(size=s) for p, s in head.items()}})
  enc = tokenizer([PREFIX + t for t in mixed_texts(seed=2)], padding=True, truncation=True,
                  max_length=40, return_tensors="np")
  ours = np.asarray(model.encode(enc["input_ids"], enc["attention_mask"],
                                 hf_position_ids(enc["input_ids"], cfg.pad_token_id)))
  with torch.no_grad():
    theirs = AutoModel.from_pretrained(model_dir).eval()(
        input_ids=torch.as_tensor(enc["input_ids"]),
        attention_mask=torch.as_tensor(enc["attention_mask"])).last_hidden_state.numpy()
  real = enc["attention_mask"].astype(bool)  # padding positions' states are not defined alike
  assert max_abs_diff("encoder-only hidden states", ours[real], theirs[real]) <= 1e-4


def test_pickle_is_refused_unless_allowed(source, tmp_path, max_abs_diff):
  model_dir, original, batch, expected = source
  out = _config_only(model_dir, str(tmp_path / "pickle"))
  torch.save(original.state_dict(), os.path.join(out, checkpoint.PICKLE))
  with pytest.raises(PickleRefused, match="--allow_pickle"):
    load_classifier(out)
  assert max_abs_diff("pytorch_model.bin (allow_pickle)", _nnx_scores(out, batch, allow_pickle=True),
                      expected) <= 1e-4


def test_directory_without_weights_is_an_error(source, tmp_path):
  out = _config_only(source[0], str(tmp_path / "empty"))
  with pytest.raises(FileNotFoundError, match="no weights"):
    load_classifier(out)


@pytest.mark.parametrize("change, message", [
    (dict(num_hidden_layers=2), "does not explain"),  # weights hold a third layer
    (dict(num_hidden_layers=4), "lacks"),  # weights miss the fourth
    (dict(hidden_size=33), "shape"),  # same names, other widths
    (dict(intermediate_size=50), "shape"),
    (dict(vocab_size=391), "shape"),
])
def test_config_weights_mismatch_is_a_clear_error(source, tmp_path, change, message):
  model_dir = source[0]
  out = str(tmp_path / "mismatch")
  shutil.copytree(model_dir, out)
  with open(os.path.join(out, checkpoint.CONFIG), encoding="utf-8") as f:
    config = json.load(f)
  config.update(change)
  with open(os.path.join(out, checkpoint.CONFIG), "w", encoding="utf-8") as f:
    json.dump(config, f)
  ModelConfig.from_hf_dict(config)  # a valid config: only the weights disagree
  with pytest.raises(ValueError, match=message):
    load_classifier(out)


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_tensors_read_from_the_mapped_file_load_as_copies_do(source, precision):
  """The loader hands XLA the file's own bytes (64-byte-aligned windows of the mapping) and
  slices each tensor out on the device; that must give what copies of the tensors give."""
  from flax import nnx

  from model import runtime
  model_dir = source[0]
  cfg = checkpoint.read_config(model_dir)
  mapped = convert.hf_to_nnx(checkpoint.read_hf_state(model_dir), cfg)
  windows = [convert._aligned_bytes(convert._untransposed(v)[0])[0] for v in mapped.values()]
  assert sum(w is not None for w in windows) >= len(windows) - 1  # the file's last has none
  assert any(w is not None and convert._aligned_bytes(
      convert._untransposed(v)[0])[1] > 0 for w, v in zip(windows, mapped.values()))
  copies = {path: np.array(v) for path, v in mapped.items()}
  assert all(convert._aligned_bytes(v)[0] is None for v in copies.values())
  kwargs = runtime.resolve(cfg, precision, "auto", None).model_kwargs()
  from_file = nnx.to_flat_state(nnx.state(convert.model_from_params(cfg, mapped, **kwargs)))
  from_copies = dict(nnx.to_flat_state(nnx.state(convert.model_from_params(cfg, copies, **kwargs))))
  for path, variable in from_file:
    np.testing.assert_array_equal(np.asarray(variable.get_value()),
                                  np.asarray(from_copies[path].get_value()), err_msg=str(path))
