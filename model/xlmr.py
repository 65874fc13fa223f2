"""XLM-RoBERTa with the RoBERTa classification head, in Flax NNX, computing what transformers'
`XLMRobertaForSequenceClassification` computes.

Inputs are given as segments rather than an attention mask so that one row can hold several
packed documents: `segment_ids[b, t]` is 0 for padding and k > 0 for the k-th document of row b;
tokens attend only within their own segment. An unpacked batch is simply segment_ids = mask.
Position ids are explicit for the same reason (RoBERTa positions restart at every document).

Dropout sits where transformers puts it (after the embeddings, on attention probabilities, after
each block's output dense, and twice in the head) and runs only when a call passes `rngs`: the
training step does, for a full fine-tune; scoring, evaluation and the frozen-feature pass do
not, so they compute exactly what they computed before dropout existed, with the same state.
"""
from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from model import cpu_matmul
from model.attention import batched_attention, segment_mask
from model.config import ModelConfig
from model.precision import DOT_GENERAL

# (qkv (batch, length, 3, heads, head_dim), segment_ids (batch, length)) -> (batch, length,
# heads, head_dim): model/attention.py's, or the fused CPU kernel; model/runtime.py chooses.
Attention = Callable[[jax.Array, jax.Array], jax.Array]
# transformers' XLMRobertaConfig defaults, for a config.json that does not say.
DEFAULT_DROPOUT = 0.1


def dropout_rates(cfg: ModelConfig) -> tuple[float, float, float]:
  """(hidden, attention probabilities, head) dropout of the checkpoint's config.json, as
  transformers reads them: the head uses classifier_dropout, or hidden_dropout_prob if unset."""
  extra = dict(cfg.extra)
  get = lambda name: DEFAULT_DROPOUT if extra.get(name) is None else float(extra[name])
  head = extra.get("classifier_dropout")
  return get("hidden_dropout_prob"), get("attention_probs_dropout_prob"), \
      get("hidden_dropout_prob") if head is None else float(head)


def _dropout(rate: float) -> nnx.Dropout:
  # No rngs of its own (the model's state stays its parameters) and deterministic unless a call
  # passes rngs: see the module docstring.
  return nnx.Dropout(rate, deterministic=True)


def _drop(dropout: nnx.Dropout, x: jax.Array, rngs: nnx.Rngs | None) -> jax.Array:
  return x if rngs is None else dropout(x, deterministic=False, rngs=rngs)


def _attention_with_dropout(qkv, segment_ids, rate: float, key: jax.Array, width: int):
  """batched_attention's math with dropout on the probabilities, as transformers applies it
  (the fused kernels never expose the probabilities).

  The mask's bits are drawn laid out as (batch, query, key position up to `width`, head):
  threefry's bits follow an element's place in that layout, which does not depend on how far
  the row is padded, so a document gets the same mask whatever pass it lands in.
  """
  q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
  batch, length, heads, head_dim = q.shape
  logits = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32)
  logits = logits / jnp.sqrt(jnp.float32(head_dim))
  logits = jnp.where(segment_mask(segment_ids)[:, None], logits, jnp.finfo(jnp.float32).min)
  probs = jax.nn.softmax(logits, axis=-1)
  keep = jax.random.bernoulli(key, 1 - rate, (batch, length, max(width, length), heads))
  keep = keep[:, :, :length].transpose(0, 3, 1, 2)
  probs = jnp.where(keep, probs / (1 - rate), 0)
  attended = jnp.einsum("bhqk,bkhd->bqhd", probs.astype(v.dtype), v, preferred_element_type=jnp.float32)
  return attended.astype(v.dtype)


def _dense(in_features: int, out_features: int, *, dtype, param_dtype, matmul, rngs) -> nnx.Linear:
  # Under bf16 compute only the matmul inputs are bf16: products accumulate and come out in
  # fp32, so bias, GELU and the residual stream never round to bf16's 8 bits (TPU MXUs
  # accumulate in fp32 anyway; the cost is fp32 activations between fused ops).
  # The AMX matmul reads its kernel packed once at load (model/cpu_matmul.py), so the parameter
  # is declared in that shape and marked for model/convert.py to pack.
  packed = dict(kernel_init=cpu_matmul.init, kernel_metadata={"layout": cpu_matmul.LAYOUT}) \
      if matmul == cpu_matmul.LAYOUT else {}
  return nnx.Linear(in_features, out_features, dtype=dtype, param_dtype=param_dtype,
                    preferred_element_type=jnp.float32, dot_general=DOT_GENERAL[matmul], rngs=rngs,
                    **packed)


def _project(dense: nnx.Linear, x: jax.Array, *, packed: bool, gelu: bool = False,
             out_dtype=jnp.float32) -> jax.Array:
  """dense(x), GELU'd if asked, in out_dtype. A packed (AMX) kernel does it in one call whose
  epilogue adds the bias, applies GELU and rounds in cache (model/cpu_matmul.py `linear`)."""
  if packed:
    return cpu_matmul.linear(x, [dense.kernel[...]], [dense.bias[...]],
                             activation="gelu" if gelu else None, out_dtype=out_dtype)
  y = dense(x)
  return (jax.nn.gelu(y, approximate=False) if gelu else y).astype(out_dtype)


def _add_norm(dense: nnx.Linear, norm: nnx.LayerNorm, h: jax.Array, residual: jax.Array, *,
              packed: bool, dropout, rngs) -> jax.Array:
  """norm(dropout(dense(h)) + residual), the end of each post-LN block. A packed (AMX) kernel
  does it in one call, the residual add and LayerNorm on each item of rows while it is in cache
  (inference only: the AMX path has no dropout)."""
  if packed:
    return cpu_matmul.linear(h, [dense.kernel[...]], [dense.bias[...]], residual=residual,
                             norm=(norm.scale[...], norm.bias[...], norm.epsilon))
  return norm(_drop(dropout, dense(h), rngs) + residual)


def _layer_norm(cfg: ModelConfig, rngs: nnx.Rngs) -> nnx.LayerNorm:
  # fp32 statistics and parameters even under bf16 compute (a bf16 scale would shift every
  # document the same way), and the two-pass variance torch uses: the one-pass "fast"
  # variance drifts past 1e-4 over 24 post-LN blocks.
  return nnx.LayerNorm(cfg.hidden_size, epsilon=cfg.layer_norm_eps, dtype=jnp.float32,
                       param_dtype=jnp.float32, use_fast_variance=False, rngs=rngs)


class Embeddings(nnx.Module):

  def __init__(self, cfg: ModelConfig, *, dtype, param_dtype, rngs: nnx.Rngs):
    embed = functools.partial(nnx.Embed, features=cfg.hidden_size, rngs=rngs)
    self.word = embed(cfg.vocab_size, dtype=dtype, param_dtype=param_dtype)
    # Rows every document adds are kept in fp32: their bf16 rounding would be a shift common
    # to all documents, which the head turns into a bias of every score.
    self.position = embed(cfg.max_position_embeddings, dtype=jnp.float32, param_dtype=jnp.float32)
    self.token_type = embed(cfg.type_vocab_size, dtype=jnp.float32, param_dtype=jnp.float32)
    self.norm = _layer_norm(cfg, rngs)
    self.dropout = _dropout(dropout_rates(cfg)[0])

  def __call__(self, input_ids: jax.Array, position_ids: jax.Array, rngs=None) -> jax.Array:
    # Token type 0 everywhere, as XLM-R is used.
    f32 = lambda a: a.astype(jnp.float32)
    x = f32(self.word(input_ids)) + f32(self.token_type.embedding[0]) + f32(self.position(position_ids))
    return _drop(self.dropout, self.norm(x), rngs)


class SelfAttention(nnx.Module):

  def __init__(self, cfg: ModelConfig, *, dtype, param_dtype, matmul, attention: Attention,
               rngs: nnx.Rngs):
    dense = functools.partial(_dense, cfg.hidden_size, cfg.hidden_size, dtype=dtype,
                              param_dtype=param_dtype, matmul=matmul, rngs=rngs)
    self.query, self.key, self.value, self.output = dense(), dense(), dense(), dense()
    self.norm = _layer_norm(cfg, rngs)
    self.num_heads = cfg.num_attention_heads
    self.attend = attention
    hidden, self.probs_dropout, _ = dropout_rates(cfg)
    self.dropout = _dropout(hidden)
    self.max_length = cfg.max_length
    self.packed = matmul == cpu_matmul.LAYOUT

  def __call__(self, x: jax.Array, segment_ids: jax.Array, rngs=None) -> jax.Array:
    batch, length, hidden = x.shape
    # One [hidden, 3 hidden] matmul rather than three: larger matmuls run nearer the machine's
    # peak, and the checkpoint keeps its three separate weights.
    projections = (self.query, self.key, self.value)
    if self.packed:
      # The AMX kernel reads the three packed weights side by side, bias and bf16 rounding in
      # its epilogue.
      qkv = cpu_matmul.linear(x, [p.kernel[...] for p in projections], [p.bias[...] for p in projections],
                              out_dtype=self.query.dtype)
    else:
      kernel = jnp.concatenate([p.kernel[...] for p in projections], axis=1)
      bias = jnp.concatenate([p.bias[...] for p in projections])
      x_, kernel, bias = nnx.nn.dtypes.promote_dtype((x, kernel, bias), dtype=self.query.dtype)
      qkv = self.query.dot_general(x_, kernel, (((x_.ndim - 1,), (0,)), ((), ())),
                                   preferred_element_type=jnp.float32) + bias
    # Attention takes q, k and v in the compute dtype and keeps its logits in fp32.
    qkv = qkv.astype(self.query.dtype).reshape(batch, length, 3, self.num_heads, hidden // self.num_heads)
    if rngs is not None and self.probs_dropout > 0:
      attended = _attention_with_dropout(qkv, segment_ids, self.probs_dropout, rngs.dropout(),
                                         self.max_length)
    else:
      attended = self.attend(qkv, segment_ids)
    return _add_norm(self.output, self.norm, attended.reshape(batch, length, hidden), x,
                     packed=self.packed, dropout=self.dropout, rngs=rngs)


class FeedForward(nnx.Module):

  def __init__(self, cfg: ModelConfig, *, dtype, param_dtype, matmul, rngs: nnx.Rngs):
    dense = functools.partial(_dense, dtype=dtype, param_dtype=param_dtype, matmul=matmul, rngs=rngs)
    self.intermediate = dense(cfg.hidden_size, cfg.intermediate_size)
    self.output = dense(cfg.intermediate_size, cfg.hidden_size)
    self.norm = _layer_norm(cfg, rngs)
    self.dropout = _dropout(dropout_rates(cfg)[0])
    self.packed = matmul == cpu_matmul.LAYOUT

  def __call__(self, x: jax.Array, rngs=None) -> jax.Array:
    # transformers' "gelu" is erf GELU; its output is the next matmul's input, in its dtype.
    h = _project(self.intermediate, x, packed=self.packed, gelu=True, out_dtype=self.output.dtype)
    return _add_norm(self.output, self.norm, h, x, packed=self.packed, dropout=self.dropout, rngs=rngs)


class Layer(nnx.Module):

  def __init__(self, cfg: ModelConfig, *, attention: Attention, **kw):
    self.attention = SelfAttention(cfg, attention=attention, **kw)
    self.mlp = FeedForward(cfg, **kw)

  def __call__(self, x: jax.Array, segment_ids: jax.Array, rngs=None) -> jax.Array:
    return self.mlp(self.attention(x, segment_ids, rngs), rngs)


class ClassificationHead(nnx.Module):
  """RoBERTa's head on `<s>`: dropout, dense, tanh, dropout, out_proj."""

  def __init__(self, cfg: ModelConfig, *, dtype, param_dtype, rngs: nnx.Rngs):
    # Full fp32 products even on TPUs, whose default for fp32 is one bf16 pass: the head runs
    # once per document.
    dense = functools.partial(nnx.Linear, dtype=dtype, param_dtype=param_dtype,
                              precision=jax.lax.Precision.HIGHEST, rngs=rngs)
    self.dense = dense(cfg.hidden_size, cfg.hidden_size)
    self.out_proj = dense(cfg.hidden_size, cfg.num_labels)
    self.dropout = _dropout(dropout_rates(cfg)[2])

  def __call__(self, features: jax.Array, rngs=None) -> jax.Array:
    hidden = jnp.tanh(self.dense(_drop(self.dropout, features, rngs)))
    return self.out_proj(_drop(self.dropout, hidden, rngs))


class XLMRobertaClassifier(nnx.Module):

  def __init__(self, cfg: ModelConfig, *, dtype=jnp.float32, param_dtype=jnp.float32,
               matmul: str = "native", attention: Attention = batched_attention, rngs: nnx.Rngs):
    """`matmul`: how the encoder's weight matmuls multiply, a key of model.precision.DOT_GENERAL;
    `attention`: how its tokens attend. model/runtime.py decides both for a machine."""
    self.config = cfg
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.embeddings = Embeddings(cfg, **kw)
    self.layers = nnx.List([Layer(cfg, matmul=matmul, attention=attention, **kw)
                            for _ in range(cfg.num_hidden_layers)])
    # The head runs once per document, so fp32 costs nothing; a bf16 output would round a
    # score near 3 to steps of 1/64, and bf16 weights would bias every score alike.
    self.head = ClassificationHead(cfg, **{**kw, "dtype": jnp.float32, "param_dtype": jnp.float32})

  def encode(self, input_ids, segment_ids, position_ids, rngs=None) -> jax.Array:
    """Final hidden states, (batch, length, hidden). `rngs` (an nnx.Rngs with a "dropout"
    stream): apply dropout, for training; None: deterministic."""
    x = self.embeddings(input_ids, position_ids, rngs)
    for layer in self.layers:
      x = layer(x, segment_ids, rngs)
    return x

  def features(self, input_ids, segment_ids, position_ids, cls_index, rngs=None) -> jax.Array:
    """The final hidden state at each document's `<s>`: (batch, documents per row, hidden)."""
    hidden = self.encode(input_ids, segment_ids, position_ids, rngs)
    return jnp.take_along_axis(hidden, cls_index[:, :, None], axis=1)

  def __call__(self, input_ids, segment_ids, position_ids, cls_index, rngs=None) -> jax.Array:
    """Head outputs (batch, documents per row, num_labels) for the `<s>` at each `cls_index`."""
    features = self.features(input_ids, segment_ids, position_ids, cls_index, rngs)
    return self.head(features, rngs).astype(jnp.float32)
