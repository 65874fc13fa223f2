"""The compiled pieces of a training step: gradients of one micro-batch, the optimiser update,
and predictions.

Parameters and Adam's moments live sharded over the "data" axis (model/placement.py); each
program gathers the parameters where it computes. Batches are split over the same axis, and
`accumulate` keeps each device's gradient sum apart, as an extra leading axis sharded over the
devices: no micro-batch reduces anything across devices. `apply` sums that axis once per step
into the parameters' sharding (an all-reduce on CPU; XLA's TPU passes make it a
reduce-scatter) and updates. The price is one fp32
gradient per device, the size of the whole model, against a cross-device reduction of it for
every micro-batch.

The loss is MSE on the float label (fineweb-edu's regression): each micro-batch adds
sum(weight * error^2) / documents-in-the-step, so accumulated gradients are exactly those of
the mean over the whole step, whatever the micro-batch split.

Dropout (a full fine-tune) draws each document's masks from a key of (run key, step, document),
and runs the model on each row alone under vmap so that nothing else in the batch changes them:
with model/xlmr.py's masks independent of padding, a document trains the same whatever the
device count, micro-batch size, or resume point.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from model.runtime import Runtime
from model.xlmr import XLMRobertaClassifier
from model import placement
from train.base import HEAD


def split_params(model: XLMRobertaClassifier, cached: bool):
  """(graphdef, params). Cached: the head alone, as State({"head": ...}), so parameter paths
  (and the freeze labels) read the same as in the full model."""
  if cached:
    graphdef, head = nnx.split(model.head, nnx.Param)
    return graphdef, nnx.State({HEAD: head})
  return nnx.split(model, nnx.Param)


def run_key(seed: int) -> jax.Array:
  """The run's dropout key as raw uint32 data, which checkpoints keep beside the parameters."""
  return jax.random.key_data(jax.random.key(seed))


class Steps:

  def __init__(self, graphdef, optimizer: optax.GradientTransformation, runtime: Runtime, params,
               *, cached: bool, frozen: bool, dropout: bool, donate: bool | None = None, mesh=None):
    """`params`: the tree to train (arrays or shapes); `frozen`: the encoder does not train,
    so it runs under stop_gradient; `dropout`: the model's own dropout in training passes;
    `donate`: update the sums, parameters and optimiser state in place (default: except on
    CPU, which cannot and says so on every call; bench/ compiles as a TPU would); `mesh`:
    training's (model/placement.make_mesh: two axes over several slices), default the runtime's."""
    self._graphdef, self._optimizer, self._runtime = graphdef, optimizer, runtime
    self._cached, self._frozen, self._dropout = cached, frozen, dropout
    self.mesh = mesh = mesh or runtime.mesh
    self.devices = mesh.devices.size
    replicated, rows = placement.replicated(mesh), placement.rows(mesh)
    self.param_shardings = placement.param_shardings(mesh, params)
    self.opt_shapes = jax.eval_shape(optimizer.init, params)
    self.opt_shardings = placement.param_shardings(mesh, self.opt_shapes)
    shapes = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), params)
    per_device = rows  # the leading axis of the sums: one slot per device, where it is
    # Shapes and shardings of the per-device gradient and loss sums a step accumulates.
    self.sum_shapes = {"grads": jax.tree.map(lambda x: jax.ShapeDtypeStruct((self.devices, *x.shape), x.dtype,
                                                                       sharding=per_device), shapes),
                  "loss": jax.ShapeDtypeStruct((self.devices,), jnp.float32, sharding=per_device)}
    sum_shardings = jax.tree.map(lambda x: x.sharding, self.sum_shapes)
    # Donation halves the memory the optimiser state and gradient sums need.
    donate = runtime.platform != "cpu" if donate is None else donate
    self.init = jax.jit(optimizer.init, out_shardings=self.opt_shardings)
    self.zeros = jax.jit(lambda: jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), self.sum_shapes),
                         out_shardings=sum_shardings)
    self.accumulate = jax.jit(self._accumulate, donate_argnums=(1,) if donate else (),
                              in_shardings=(self.param_shardings, sum_shardings, rows, replicated,
                                            replicated, replicated),
                              out_shardings=sum_shardings)
    self.apply = jax.jit(self._apply, donate_argnums=(0, 1, 2) if donate else (),
                         in_shardings=(self.param_shardings, self.opt_shardings, sum_shardings),
                         out_shardings=(self.param_shardings, self.opt_shardings, replicated))
    self.predict = jax.jit(self._predict, in_shardings=(self.param_shardings, rows), out_shardings=rows)

  def place(self, params):
    """Host parameters (numpy, the same on every host) split over the devices."""
    return placement.place(params, self.param_shardings)

  def _scores(self, params, batch, keys) -> jax.Array:
    """One float score per row; `keys`, one per row, turn dropout on."""
    if self._cached:
      head = nnx.merge(self._graphdef, params[HEAD])
      return head(batch["features"])[:, 0].astype(jnp.float32)
    model = nnx.merge(self._graphdef, params)
    inputs = (batch["input_ids"], batch["segment_ids"], batch["position_ids"], batch["cls_index"])
    if self._frozen:
      # No backward pass through an encoder that does not train.
      features = jax.lax.stop_gradient(model.features(*inputs))
      return model.head(features)[:, 0, 0].astype(jnp.float32)
    if keys is None:
      return model(*inputs)[:, 0, 0]

    def row(input_ids, segment_ids, position_ids, cls_index, key):
      one = lambda x: x[None]
      return model(one(input_ids), one(segment_ids), one(position_ids), one(cls_index),
                   rngs=nnx.Rngs(dropout=key))[0, 0, 0]
    return jax.vmap(row)(*inputs, keys)

  def _predict(self, params, batch) -> jax.Array:
    with self._runtime.matmul_precision():
      return self._scores(placement.gathered(self.mesh, params), batch, None)

  def _accumulate(self, params, sums, batch, documents, key_data, step):
    """`sums` plus this micro-batch's gradients and loss, each device's kept apart."""
    keys = None
    if self._dropout:
      step_key = jax.random.fold_in(jax.random.wrap_key_data(key_data), step)
      keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(step_key, batch["document"])
    # (rows, ...) -> (devices, rows per device, ...): device d's own rows, where they already are.
    split = lambda x: jax.lax.with_sharding_constraint(
        x.reshape(self.devices, x.shape[0] // self.devices, *x.shape[1:]), placement.rows(self.mesh))
    batch, keys = jax.tree.map(split, (batch, keys))

    def loss_fn(p, b, k):
      error = self._scores(p, b, k) - b["label"]
      return jnp.sum(b["weight"] * error * error) / documents
    with self._runtime.matmul_precision():
      losses, grads = jax.vmap(jax.value_and_grad(loss_fn), in_axes=(None, 0, 0))(
          placement.gathered(self.mesh, params), batch, keys)
    return {"grads": jax.tree.map(jnp.add, sums["grads"], grads), "loss": sums["loss"] + losses}

  def _apply(self, params, opt_state, sums):
    """The step's one cross-device reduction, then the optimiser; (params, opt_state, loss)."""
    grads = jax.lax.with_sharding_constraint(jax.tree.map(lambda g: g.sum(0), sums["grads"]),
                                             self.param_shardings)
    updates, opt_state = self._optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, sums["loss"].sum()
