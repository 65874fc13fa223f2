"""The compiled pieces of a training step: gradients of one micro-batch, the optimiser update,
and predictions. Parameters are replicated; batches are split over the "data" axis, so XLA
sums gradients across devices itself.

The loss is MSE on the float label (fineweb-edu's regression): each micro-batch adds
sum(weight * error^2) / documents-in-the-step, so accumulated gradients are exactly those of
the mean over the whole step, whatever the micro-batch split.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from model.xlmr import XLMRobertaClassifier
from train import parallel
from train.base import HEAD


def split_params(model: XLMRobertaClassifier, cached: bool):
  """(graphdef, params). Cached: the head alone, as State({"head": ...}), so parameter paths
  (and the freeze labels) read the same as in the full model."""
  if cached:
    graphdef, head = nnx.split(model.head, nnx.Param)
    return graphdef, nnx.State({HEAD: head})
  return nnx.split(model, nnx.Param)


class Steps:

  def __init__(self, graphdef, optimizer: optax.GradientTransformation, mesh, cached: bool):
    self._graphdef, self._optimizer, self._cached = graphdef, optimizer, cached
    replicated, rows = parallel.replicated(mesh), parallel.rows(mesh)
    # CPU cannot donate buffers and says so on every call; elsewhere donation halves the memory
    # the optimiser state and gradient sums need.
    donate = mesh.devices.flat[0].platform != "cpu"
    self.accumulate = jax.jit(self._accumulate, donate_argnums=(1,) if donate else (),
                              out_shardings=(replicated, replicated))
    self.apply = jax.jit(self._apply, donate_argnums=(0, 1) if donate else (),
                         out_shardings=(replicated, replicated))
    self.predict = jax.jit(self._predict, out_shardings=rows)
    self.zeros = jax.jit(lambda params: jax.tree.map(jnp.zeros_like, params),
                         out_shardings=replicated)

  def _predict(self, params, batch) -> jax.Array:
    """One float score per row."""
    if self._cached:
      head = nnx.merge(self._graphdef, params[HEAD])
      return head(batch["features"])[:, 0].astype(jnp.float32)
    model = nnx.merge(self._graphdef, params)
    return model(batch["input_ids"], batch["segment_ids"], batch["position_ids"],
                 batch["cls_index"])[:, 0, 0]

  def _accumulate(self, params, grads, batch, documents):
    """(grads + this micro-batch's gradients, its share of the step's loss)."""
    def loss_fn(p):
      error = self._predict(p, batch) - batch["label"]
      return jnp.sum(batch["weight"] * error * error) / documents
    loss, new = jax.value_and_grad(loss_fn)(params)
    return jax.tree.map(jnp.add, grads, new), loss

  def _apply(self, params, opt_state, grads):
    updates, opt_state = self._optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state
