"""Hugging Face <-> NNX weight conversion, as a table.

Each row of the key map names a tensor in transformers' `XLMRobertaForSequenceClassification`
state dict, the NNX path that holds it, and whether the matrix is transposed (torch's Linear
stores (out, in), NNX's kernel (in, out)). Conversion in both directions reads the same table,
so it cannot drift; `tests/model/test_convert.py` proves the round trip against PyTorch.
"""
from __future__ import annotations

import functools
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
  groups = {}  # a layer's parameters, then the embeddings' and the head's
  for path, variable in nnx.to_flat_state(state):
    groups.setdefault(path[:2] if path[0] == "layers" else path[:1], []).append((path, variable))
  flat = []
  for members in groups.values():
    sources, offsets, steps = [], [], []
    for path, variable in members:
      raw, transpose = _untransposed(params[path])
      shape = tuple(np.shape(raw)[::-1] if transpose else np.shape(raw))
      # Packed for the AMX matmul once here, in the compute dtype, rather than in every call.
      packed = variable.get_metadata().get("layout") == cpu_matmul.LAYOUT and len(shape) == 2
      if (cpu_matmul.packed_shape(*shape) if packed else shape) != tuple(variable.shape):
        raise ValueError(f"{'.'.join(map(str, path))}: checkpoint shape {shape}, "
                         f"model shape {variable.shape}")
      source, offset = _aligned_bytes(raw)
      sources.append(raw if source is None else source)
      offsets.append(np.int32(offset))
      # Each parameter in the dtype the model declares for it: some stay fp32 under bf16.
      steps.append((None if source is None else (raw.shape, raw.dtype), transpose,
                    jnp.dtype(variable.dtype), packed))
    values = _on_device(sources, offsets, tuple(steps))
    flat += [(path, variable.replace(value)) for (path, variable), value in zip(members, values)]
  return nnx.merge(graphdef, nnx.from_flat_state(flat))


def _untransposed(value) -> tuple[np.ndarray, bool]:
  """(array, transposed): a transposed view of a row-major tensor (hf_to_nnx's kernels, read
  from the file) goes to the device as it lies, and XLA transposes it there. Handing the view
  itself over would make a host copy in the new order first."""
  if isinstance(value, np.ndarray) and value.ndim == 2 and not value.flags.c_contiguous \
      and value.T.flags.c_contiguous:
    return np.asarray(value.T), True
  return value, False


def _aligned_bytes(raw) -> tuple[np.ndarray | None, int]:
  """(bytes, offset): a row-major numpy tensor lying inside a larger buffer (the mapped
  checkpoint file) as the bytes of that buffer from the 64-byte boundary at or before it, and
  where in them it starts. On CPU, XLA takes a 64-byte-aligned host array as it lies instead of
  copying it; safetensors lays tensors 8 bytes apart, so most are not aligned, and base's 1.1 GB
  took 0.45 s and as much fresh memory to copy. Every window is 64 bytes longer than its tensor,
  so that all the layers' windows have one shape. (None, 0) where there is no such window."""
  if not isinstance(raw, np.ndarray) or not raw.flags.c_contiguous or raw.nbytes == 0:
    return None, 0
  owner = raw
  while isinstance(owner, np.ndarray) and owner.base is not None:
    owner = owner.base
  try:
    buffer = np.frombuffer(owner, np.uint8)
  except (TypeError, ValueError):  # not a flat buffer
    return None, 0
  start, offset = raw.ctypes.data - buffer.ctypes.data, raw.ctypes.data % _ALIGNMENT
  if not 0 <= start - offset or start + raw.nbytes - offset + _ALIGNMENT > buffer.size:
    return None, 0
  return buffer[start - offset:start - offset + raw.nbytes + _ALIGNMENT], offset


_ALIGNMENT = 64


@functools.partial(jax.jit, static_argnums=2)
def _on_device(sources, offsets, steps):
  """Each tensor read from its bytes, transposed, cast and packed as `steps` say, a group of them
  in one program: every layer runs the same one (the offsets are arguments, not constants). Op
  by op, each transpose, cast and packing compiled and ran a program of its own, and wrote a
  buffer of its own: base loaded in 1.8 s; in one program from copies of the tensors, 1.2 s."""
  values = []
  for value, offset, (stored, transpose, dtype, packed) in zip(sources, offsets, steps):
    if stored is not None:  # the tensor's bytes, from `offset` in its window
      shape, stored_dtype = stored
      value = jax.lax.dynamic_slice(value, (offset,), (value.size - _ALIGNMENT,))
      value = jax.lax.bitcast_convert_type(value.reshape(-1, stored_dtype.itemsize), stored_dtype)
      value = value.reshape(shape)
    value = (value.T if transpose else value).astype(dtype)
    values.append(cpu_matmul.pack(value) if packed else value)
  return values


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
