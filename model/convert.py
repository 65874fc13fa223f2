"""Hugging Face <-> NNX weight conversion, as a table.

Each row of the key map names a tensor in transformers' `XLMRobertaForSequenceClassification`
state dict, the NNX path that holds it, and whether the matrix is transposed (torch's Linear
stores (out, in), NNX's kernel (in, out)). Conversion in both directions reads the same table,
so it cannot drift; `tests/model/test_convert.py` proves the round trip against PyTorch.
"""
from __future__ import annotations

import re
from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from model import cpu_matmul
from model.config import ModelConfig
from model.xlmr import XLMRobertaClassifier

Path = tuple  # an NNX state path, e.g. ("layers", 0, "attention", "query", "kernel")

# (Hugging Face name, NNX path, transpose). "{i}" is the layer index.
_EMBEDDINGS = [
    ("roberta.embeddings.word_embeddings.weight", "embeddings.word.embedding", False),
    ("roberta.embeddings.position_embeddings.weight", "embeddings.position.embedding", False),
    ("roberta.embeddings.token_type_embeddings.weight", "embeddings.token_type.embedding", False),
    ("roberta.embeddings.LayerNorm.weight", "embeddings.norm.scale", False),
    ("roberta.embeddings.LayerNorm.bias", "embeddings.norm.bias", False),
]
_LAYER = [
    ("attention.self.query", "attention.query"),
    ("attention.self.key", "attention.key"),
    ("attention.self.value", "attention.value"),
    ("attention.output.dense", "attention.output"),
    ("intermediate.dense", "mlp.intermediate"),
    ("output.dense", "mlp.output"),
]
_LAYER_NORMS = [("attention.output.LayerNorm", "attention.norm"), ("output.LayerNorm", "mlp.norm")]
_HEAD = [("classifier.dense", "head.dense"), ("classifier.out_proj", "head.out_proj")]

ENCODER_PREFIX = "roberta."
HEAD_PREFIX = "classifier."


def _linear(hf: str, nnx_name: str):
  return [(f"{hf}.weight", f"{nnx_name}.kernel", True), (f"{hf}.bias", f"{nnx_name}.bias", False)]


def _norm(hf: str, nnx_name: str):
  return [(f"{hf}.weight", f"{nnx_name}.scale", False), (f"{hf}.bias", f"{nnx_name}.bias", False)]


def key_map(cfg: ModelConfig) -> list[tuple[str, Path, bool]]:
  """Every tensor of the model: (Hugging Face name, NNX path, transpose)."""
  rows = list(_EMBEDDINGS)
  for i in range(cfg.num_hidden_layers):
    prefix = f"roberta.encoder.layer.{i}."
    for hf, ours in _LAYER:
      rows += _linear(prefix + hf, f"layers.{i}.{ours}")
    for hf, ours in _LAYER_NORMS:
      rows += _norm(prefix + hf, f"layers.{i}.{ours}")
  for hf, ours in _HEAD:
    rows += _linear(hf, ours)
  return [(hf, tuple(int(p) if p.isdigit() else p for p in ours.split(".")), t) for hf, ours, t in rows]


# Tensors that checkpoints carry but the classifier does not use.
_IGNORED = re.compile(r"(^|\.)(pooler\.|position_ids$|lm_head\.)")


def normalize_hf_names(state: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Names as XLMRobertaForSequenceClassification has them, whatever saved the checkpoint.

  An encoder-only `XLMRobertaModel` (how nlpai-lab/KoE5 is published) saves without the
  `roberta.` prefix; TF-era checkpoints call LayerNorm parameters gamma/beta.
  """
  out = {}
  for name, value in state.items():
    if _IGNORED.search(name):
      continue
    name = re.sub(r"LayerNorm\.gamma$", "LayerNorm.weight", name)
    name = re.sub(r"LayerNorm\.beta$", "LayerNorm.bias", name)
    if name.startswith(("embeddings.", "encoder.")):
      name = ENCODER_PREFIX + name
    out[name] = value
  return out


def hf_to_nnx(state: Mapping[str, np.ndarray], cfg: ModelConfig,
              require_head: bool = True) -> dict[Path, np.ndarray]:
  """Hugging Face tensors to NNX paths. Raises on a missing or misshapen tensor."""
  state = normalize_hf_names(state)
  rows = key_map(cfg)
  if not require_head:
    rows = [r for r in rows if not r[0].startswith(HEAD_PREFIX) or r[0] in state]
  missing = [hf for hf, _, _ in rows if hf not in state]
  if missing:
    raise ValueError(f"checkpoint lacks {len(missing)} tensors of the model, e.g. {missing[:3]}")
  known = {hf for hf, _, _ in key_map(cfg)}
  unexpected = sorted(set(state) - known)
  if unexpected:
    raise ValueError(f"checkpoint has tensors this config does not explain, e.g. {unexpected[:3]} "
                     "(does config.json match the weights?)")
  return {path: (np.asarray(state[hf]).T if transpose else np.asarray(state[hf]))
          for hf, path, transpose in rows}


def nnx_to_hf(params: Mapping[Path, np.ndarray], cfg: ModelConfig) -> dict[str, np.ndarray]:
  """NNX paths back to Hugging Face names (contiguous, as safetensors wants)."""
  return {hf: np.ascontiguousarray(np.asarray(params[path]).T if transpose else np.asarray(params[path]))
          for hf, path, transpose in key_map(cfg)}


def flax_msgpack_to_hf_names(flat: Mapping[tuple, np.ndarray]) -> dict[str, np.ndarray]:
  """transformers' retired Flax layout (`flax_model.msgpack`) to PyTorch names.

  Flax stored Linear kernels as (in, out), embeddings as `embedding` and LayerNorm as `scale`.
  """
  out = {}
  for path, value in flat.items():
    *parents, leaf = [str(p) for p in path]
    value = np.asarray(value)
    if leaf == "kernel":
      leaf, value = "weight", value.T
    elif leaf in ("embedding", "scale"):
      leaf = "weight"
    out[".".join(parents + [leaf])] = value
  return out


def model_from_params(cfg: ModelConfig, params: Mapping[Path, np.ndarray],
                      **model_kwargs) -> XLMRobertaClassifier:
  """An NNX model holding `params`, without spending time on a random initialisation.
  `model_kwargs`: XLMRobertaClassifier's (dtype, param_dtype, matmul, attention)."""
  keys = _ShapeOnlyKeys()
  abstract = nnx.eval_shape(lambda: XLMRobertaClassifier(cfg, **model_kwargs, rngs=keys))
  graphdef, state = nnx.split(abstract)
  flat = []
  for path, variable in nnx.to_flat_state(state):
    value = params[path]
    if variable.get_metadata().get("layout") == cpu_matmul.LAYOUT and np.ndim(value) == 2:
      # Packed for the AMX matmul once here, in the compute dtype, rather than in every call.
      value = cpu_matmul.pack(_in_dtype(value, variable.dtype))
    if tuple(value.shape) != tuple(variable.shape):
      raise ValueError(f"{'.'.join(map(str, path))}: checkpoint shape {value.shape}, "
                       f"model shape {variable.shape}")
    # Each parameter in the dtype the model declares for it: some stay fp32 under bf16.
    flat.append((path, variable.replace(_in_dtype(value, variable.dtype))))
  return nnx.merge(graphdef, nnx.from_flat_state(flat))


def _in_dtype(value, dtype) -> jax.Array:
  """`value` on the device in `dtype`, converted by XLA: numpy's cast to ml_dtypes' bfloat16 goes
  element by element (4.3 of base's 5.7 s load under bfloat16, most of it the word embeddings)."""
  array = jnp.asarray(value)
  return array if array.dtype == dtype else array.astype(dtype)


class _ShapeOnlyKeys:
  """Stands in for nnx.Rngs where only shapes are wanted: every stream gives one fixed key.

  nnx.Rngs counts its draws in a Variable, and setting a Variable to a tracer asks the tracer
  for its sharding, whose error message walks the whole trace so far: quadratic in the layers,
  1.8 s of XLM-R-large's 3 s load. Nothing here is ever random, so no count is needed."""

  def __init__(self):
    self._key = jax.random.key(0)

  def __call__(self):
    return self._key

  def __getattr__(self, stream: str):
    return self
