"""XLM-RoBERTa with the RoBERTa classification head, in Flax NNX, computing what transformers'
`XLMRobertaForSequenceClassification` computes.

Inputs are given as segments rather than an attention mask so that one row can hold several
packed documents: `segment_ids[b, t]` is 0 for padding and k > 0 for the k-th document of row b;
tokens attend only within their own segment. An unpacked batch is simply segment_ids = mask.
Position ids are explicit for the same reason (RoBERTa positions restart at every document).
"""
from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from model.attention import batched_attention
from model.config import ModelConfig
from model.precision import DOT_GENERAL

# (qkv (batch, length, 3, heads, head_dim), segment_ids (batch, length)) -> (batch, length,
# heads, head_dim): model/attention.py's, or the fused CPU kernel; model/runtime.py chooses.
Attention = Callable[[jax.Array, jax.Array], jax.Array]


def _dense(in_features: int, out_features: int, *, dtype, param_dtype, matmul, rngs) -> nnx.Linear:
  # Under bf16 compute only the matmul inputs are bf16: products accumulate and come out in
  # fp32, so bias, GELU and the residual stream never round to bf16's 8 bits (TPU MXUs
  # accumulate in fp32 anyway; the cost is fp32 activations between fused ops).
  return nnx.Linear(in_features, out_features, dtype=dtype, param_dtype=param_dtype,
                    preferred_element_type=jnp.float32, dot_general=DOT_GENERAL[matmul], rngs=rngs)


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

  def __call__(self, input_ids: jax.Array, position_ids: jax.Array) -> jax.Array:
    # Token type 0 everywhere, as XLM-R is used.
    f32 = lambda a: a.astype(jnp.float32)
    x = f32(self.word(input_ids)) + f32(self.token_type.embedding[0]) + f32(self.position(position_ids))
    return self.norm(x)


class SelfAttention(nnx.Module):

  def __init__(self, cfg: ModelConfig, *, dtype, param_dtype, matmul, attention: Attention,
               rngs: nnx.Rngs):
    dense = functools.partial(_dense, cfg.hidden_size, cfg.hidden_size, dtype=dtype,
                              param_dtype=param_dtype, matmul=matmul, rngs=rngs)
    self.query, self.key, self.value, self.output = dense(), dense(), dense(), dense()
    self.norm = _layer_norm(cfg, rngs)
    self.num_heads = cfg.num_attention_heads
    self.attend = attention

  def __call__(self, x: jax.Array, segment_ids: jax.Array) -> jax.Array:
    batch, length, hidden = x.shape
    # One [hidden, 3 hidden] matmul rather than three: larger matmuls run nearer the machine's
    # peak, and the checkpoint keeps its three separate weights.
    projections = (self.query, self.key, self.value)
    kernel = jnp.concatenate([p.kernel[...] for p in projections], axis=1)
    bias = jnp.concatenate([p.bias[...] for p in projections])
    x_, kernel, bias = nnx.nn.dtypes.promote_dtype((x, kernel, bias), dtype=self.query.dtype)
    qkv = self.query.dot_general(x_, kernel, (((x_.ndim - 1,), (0,)), ((), ())),
                                 preferred_element_type=jnp.float32) + bias
    # Attention takes q, k and v in the compute dtype and keeps its logits in fp32.
    qkv = qkv.astype(x_.dtype).reshape(batch, length, 3, self.num_heads, hidden // self.num_heads)
    attended = self.attend(qkv, segment_ids)
    out = self.output(attended.reshape(batch, length, hidden))
    return self.norm(out + x)


class FeedForward(nnx.Module):

  def __init__(self, cfg: ModelConfig, *, dtype, param_dtype, matmul, rngs: nnx.Rngs):
    dense = functools.partial(_dense, dtype=dtype, param_dtype=param_dtype, matmul=matmul, rngs=rngs)
    self.intermediate = dense(cfg.hidden_size, cfg.intermediate_size)
    self.output = dense(cfg.intermediate_size, cfg.hidden_size)
    self.norm = _layer_norm(cfg, rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    h = jax.nn.gelu(self.intermediate(x), approximate=False)  # transformers' "gelu" is erf GELU
    return self.norm(self.output(h) + x)


class Layer(nnx.Module):

  def __init__(self, cfg: ModelConfig, *, attention: Attention, **kw):
    self.attention = SelfAttention(cfg, attention=attention, **kw)
    self.mlp = FeedForward(cfg, **kw)

  def __call__(self, x: jax.Array, segment_ids: jax.Array) -> jax.Array:
    return self.mlp(self.attention(x, segment_ids))


class ClassificationHead(nnx.Module):
  """RoBERTa's head on `<s>`: dense, tanh, out_proj (dropout is off at inference)."""

  def __init__(self, cfg: ModelConfig, *, dtype, param_dtype, rngs: nnx.Rngs):
    # Full fp32 products even on TPUs, whose default for fp32 is one bf16 pass: the head runs
    # once per document.
    dense = functools.partial(nnx.Linear, dtype=dtype, param_dtype=param_dtype,
                              precision=jax.lax.Precision.HIGHEST, rngs=rngs)
    self.dense = dense(cfg.hidden_size, cfg.hidden_size)
    self.out_proj = dense(cfg.hidden_size, cfg.num_labels)

  def __call__(self, features: jax.Array) -> jax.Array:
    return self.out_proj(jnp.tanh(self.dense(features)))


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

  def encode(self, input_ids, segment_ids, position_ids) -> jax.Array:
    """Final hidden states, (batch, length, hidden)."""
    x = self.embeddings(input_ids, position_ids)
    for layer in self.layers:
      x = layer(x, segment_ids)
    return x

  def features(self, input_ids, segment_ids, position_ids, cls_index) -> jax.Array:
    """The final hidden state at each document's `<s>`: (batch, documents per row, hidden)."""
    hidden = self.encode(input_ids, segment_ids, position_ids)
    return jnp.take_along_axis(hidden, cls_index[:, :, None], axis=1)

  def __call__(self, input_ids, segment_ids, position_ids, cls_index) -> jax.Array:
    """Head outputs (batch, documents per row, num_labels) for the `<s>` at each `cls_index`."""
    return self.head(self.features(input_ids, segment_ids, position_ids, cls_index)).astype(jnp.float32)
