"""Reading and writing Hugging Face model directories (local paths; see `hub.py` for remote ones).

Weights: `model.safetensors`, sharded safetensors with `model.safetensors.index.json`, or
transformers' retired Flax `flax_model.msgpack`. Pickled `pytorch_model.bin` only with
`allow_pickle`, because unpickling runs whatever code the file carries.
"""
from __future__ import annotations

import json
import os

import numpy as np

from model import convert
from model.config import ModelConfig

SAFETENSORS = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
FLAX_MSGPACK = "flax_model.msgpack"
PICKLE = "pytorch_model.bin"
PICKLE_INDEX = "pytorch_model.bin.index.json"
CONFIG = "config.json"
# Files of a model directory that koedu reads, in order of preference for weights.
WEIGHT_FILES = (SAFETENSORS, SAFETENSORS_INDEX, FLAX_MSGPACK, PICKLE, PICKLE_INDEX)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "sentencepiece.bpe.model")


class PickleRefused(ValueError):
  pass


def weight_files(model_dir: str, allow_pickle: bool = False) -> list[str]:
  """The weight files this directory's model loads from (one, or the shards of an index)."""
  present = set(os.listdir(model_dir))
  for name in WEIGHT_FILES:
    if name not in present:
      continue
    if name in (PICKLE, PICKLE_INDEX) and not allow_pickle:
      raise PickleRefused(
          f"{model_dir} holds only pickled PyTorch weights ({name}); unpickling runs code from the "
          "file, so koedu refuses it. Convert it to safetensors, or pass --allow_pickle if you "
          "trust its source.")
    if name.endswith(".index.json"):
      with open(os.path.join(model_dir, name), encoding="utf-8") as f:
        shards = sorted(set(json.load(f)["weight_map"].values()))
      return [os.path.join(model_dir, s) for s in shards]
    return [os.path.join(model_dir, name)]
  raise FileNotFoundError(f"{model_dir} has no weights: expected one of {', '.join(WEIGHT_FILES)}")


def read_hf_state(model_dir: str, allow_pickle: bool = False) -> dict[str, np.ndarray]:
  """Every tensor of the checkpoint, by its Hugging Face name, as host numpy arrays."""
  state = {}
  for path in weight_files(model_dir, allow_pickle):
    if path.endswith(".safetensors"):
      state.update(read_safetensors(path))
    elif path.endswith(".msgpack"):
      from flax import serialization, traverse_util
      with open(path, "rb") as f:
        tree = serialization.msgpack_restore(f.read())
      state.update(convert.flax_msgpack_to_hf_names(traverse_util.flatten_dict(tree)))
    else:
      import torch  # only for --allow_pickle; torch is not a runtime dependency
      loaded = torch.load(path, map_location="cpu", weights_only=True)
      state.update({k: v.float().numpy() if v.dtype == torch.bfloat16 else v.numpy()
                    for k, v in loaded.items()})
  return state


# safetensors' dtype names -> numpy (bfloat16 through ml_dtypes, which JAX ships).
_SAFETENSORS_DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "I64": "int64",
                       "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool"}


def read_safetensors(path: str) -> dict[str, np.ndarray]:
  """Every tensor of a safetensors file as a read-only view of the file mapped in memory.

  The format is an 8-byte little-endian header length, a JSON header of (dtype, shape, byte
  range) per tensor, then the bytes: mapping it costs nothing until a tensor is read, where
  the safetensors package copies every tensor first (a third of a base model's load time).
  """
  import json as _json

  import ml_dtypes
  data = np.memmap(path, dtype=np.uint8, mode="r")
  header_size = int(data[:8].view("<u8")[0])
  header = _json.loads(bytes(data[8:8 + header_size]))
  start = 8 + header_size
  tensors = {}
  for name, spec in header.items():
    if name == "__metadata__":
      continue
    dtype = ml_dtypes.bfloat16 if spec["dtype"] == "BF16" else np.dtype(_SAFETENSORS_DTYPES[spec["dtype"]])
    begin, end = spec["data_offsets"]
    tensors[name] = data[start + begin:start + end].view(dtype).reshape(spec["shape"])
  return tensors


def read_config(model_dir: str) -> ModelConfig:
  return ModelConfig.from_json_file(os.path.join(model_dir, CONFIG))


def load_classifier(model_dir: str, *, allow_pickle: bool = False, **model_kwargs):
  """(config, NNX model) from a local Hugging Face directory. `model_kwargs` are
  XLMRobertaClassifier's (`Runtime.model_kwargs()`); none: fp32 with XLA's batched attention."""
  cfg = read_config(model_dir)
  if cfg.num_labels != 1:
    raise ValueError(f"{model_dir}: koedu scores with one regression output, config has "
                     f"num_labels={cfg.num_labels}")
  params = convert.hf_to_nnx(read_hf_state(model_dir, allow_pickle), cfg)
  return cfg, convert.model_from_params(cfg, params, **model_kwargs)


def save_hf(model_dir: str, cfg: ModelConfig, params, tokenizer_dir: str | None = None) -> None:
  """Write a directory that transformers and `pipeline.run --model` both load."""
  from safetensors.numpy import save_file
  os.makedirs(model_dir, exist_ok=True)
  tensors = {k: np.asarray(v, np.float32) for k, v in convert.nnx_to_hf(params, cfg).items()}
  save_file(tensors, os.path.join(model_dir, SAFETENSORS), metadata={"format": "pt"})
  with open(os.path.join(model_dir, CONFIG), "w", encoding="utf-8") as f:
    json.dump(cfg.to_hf_dict(), f, indent=2, sort_keys=True)
  if tokenizer_dir:
    from transformers import AutoTokenizer
    AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(model_dir)
