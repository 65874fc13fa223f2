"""Memory per device of a full fine-tune of XLM-RoBERTa-large over 8 devices, from XLA.

    python -m bench.train_memory [--device_batch_size 1,4,8] [--length 512] [--devices 8]

Compiles train/steps.py's two programs (`accumulate`: one micro-batch's forward and backward
into the per-device gradient sums; `apply`: the reduction and AdamW) for the real large shape
(24 layers, hidden 1024, vocab 250002, 514 positions) on fake CPU devices, from abstract
parameters (no weights are made), and reads `compiled.memory_analysis()`: what the partitioned
program for one device takes as arguments, gives as outputs, and needs as temporaries. The
programs are compiled with the buffer donation they have on TPU (gradient sums, parameters and
optimiser state updated in place), so aliased outputs take no extra memory.

Peak per device while a program runs = what stays resident across the step (parameters,
optimiser state, gradient sums, this micro-batch) + its temporaries + outputs not aliased to an
input. Results go to the bench directory and the "train memory" section of docs/benchmarks.md.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

from bench import common

GIB = 2**30
LARGE = dict(vocab_size=common.VOCAB_SIZE, max_position_embeddings=common.MAX_POSITIONS,
             **common.SIZES["large"])


def measure(devices: int, rows_per_device: int, length: int, precision: str, replicated: bool = False) -> dict:
  """In a process started with `devices` fake CPU devices. `replicated`: parameters and Adam
  state whole on every device, as before FSDP, for comparison."""
  import jax
  import jax.numpy as jnp
  import numpy as np
  from flax import nnx

  from model import runtime
  from model.config import ModelConfig
  from model.xlmr import XLMRobertaClassifier
  from train import optim, parallel, steps
  from train.config import TrainConfig

  if replicated:
    parallel.param_sharding = lambda mesh, shape: parallel.replicated(mesh)
  cfg = ModelConfig(**LARGE)
  # TPUs' attention (with dropout on, training runs its own attention over the probabilities).
  rt = runtime.resolve(cfg, precision, "batched", devices=jax.devices()[:devices], training=True)
  abstract = nnx.eval_shape(lambda: XLMRobertaClassifier(cfg, **rt.model_kwargs(), rngs=nnx.Rngs(0)))
  graphdef, params = nnx.split(abstract, nnx.Param)
  config = TrainConfig(data=("-",), output="-", freeze_encoder=False)
  optimizer = optim.optimizer(config, params, 1000)
  run = steps.Steps(graphdef, optimizer, rt, params, cached=False, frozen=False, dropout=True)
  with_sharding = lambda tree, shardings: jax.tree.map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)
  p = with_sharding(params, run.param_shardings)
  o = with_sharding(jax.eval_shape(optimizer.init, params), run.opt_shardings)
  sums = run.sum_shapes
  rows = rows_per_device * devices
  row = lambda dtype, *shape: jax.ShapeDtypeStruct((rows, *shape), dtype, sharding=parallel.rows(rt.mesh))
  batch = {"input_ids": row(jnp.int32, length), "segment_ids": row(jnp.int32, length),
           "position_ids": row(jnp.int32, length), "cls_index": row(jnp.int32, 1),
           "label": row(jnp.float32), "weight": row(jnp.float32), "document": row(jnp.int32)}
  scalar = lambda dtype, *shape: jax.ShapeDtypeStruct(shape, dtype, sharding=parallel.replicated(rt.mesh))
  # Donation as on TPU (Steps leaves it off on CPU, where it only warns at run time).
  accumulate = jax.jit(run._accumulate, donate_argnums=(1,),
                       out_shardings=jax.tree.map(lambda x: x.sharding, sums))
  apply = jax.jit(run._apply, donate_argnums=(0, 1, 2),
                  out_shardings=(run.param_shardings, run.opt_shardings, parallel.replicated(rt.mesh)))
  out = {"devices": devices, "rows_per_device": rows_per_device, "length": length, "precision": precision,
         "layout": "replicated" if replicated else "fsdp",
         "attention": rt.attention, "parameters": int(sum(np.prod(x.shape) for x in jax.tree.leaves(params)))}
  per_device = lambda tree: sum(int(np.prod(x.sharding.shard_shape(x.shape))) * x.dtype.itemsize
                                for x in jax.tree.leaves(tree))
  out["resident"] = {"params": per_device(p), "opt_state": per_device(o), "grad_sums": per_device(sums),
                     "batch": per_device(batch)}
  for name, fn, args in (("accumulate", accumulate, (p, sums, batch, scalar(jnp.float32), scalar(jnp.uint32, 2),
                                                      scalar(jnp.int32))),
                         ("apply", apply, (p, o, sums))):
    start = time.perf_counter()
    compiled = fn.lower(*args).compile(compiler_options=dict(rt.compiler_options))
    m = compiled.memory_analysis()
    out[name] = {"argument": m.argument_size_in_bytes, "output": m.output_size_in_bytes,
                 "temp": m.temp_size_in_bytes, "alias": m.alias_size_in_bytes,
                 "code": m.generated_code_size_in_bytes, "compile_seconds": time.perf_counter() - start}
  resident = sum(out["resident"].values())
  for name in ("accumulate", "apply"):
    m = out[name]
    m["peak"] = resident + m["temp"] + m["output"] - m["alias"]
  # Without sharding: the same parameters, Adam moments and one gradient, whole on every device.
  out["replicated_state"] = out["parameters"] * 4 * 4
  return out


def report(runs: list[dict], command: str) -> str:
  rows = []
  for r in runs:
    res = r["resident"]
    acc, app = r["accumulate"], r["apply"]
    rows.append([r.get("layout", "fsdp"), r["rows_per_device"], f"{r['length']}", f"{res['params'] / GIB:.2f}", f"{res['opt_state'] / GIB:.2f}",
                 f"{res['grad_sums'] / GIB:.2f}", f"{acc['temp'] / GIB:.2f}", f"{acc['peak'] / GIB:.2f}",
                 f"{app['temp'] / GIB:.2f}", f"{app['peak'] / GIB:.2f}"])
  r = runs[0]
  m = common.machine()
  return "\n\n".join([
      f"Command: `{command}` (from the repository root), {time.strftime('%Y-%m-%d %H:%M')}; jax "
      f"{m['versions'].get('jaxlib')}. XLM-RoBERTa-large, {r['parameters'] / 1e6:.0f}M parameters, "
      f"full fine-tune with dropout, `--dtype {r['precision']}`, attention `{r['attention']}`, over "
      f"{r['devices']} fake CPU devices; GiB per device.",
      common.table(["parameters and Adam state", "rows per device", "length", "params", "Adam state", "gradient sums",
                    "accumulate temp", "accumulate peak", "apply temp", "apply peak"], rows),
      f"Parameters, two Adam moments and a gradient whole on every device: "
      f"{r['replicated_state'] / GIB:.1f} GiB before any activation."])


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--devices", type=int, default=8)
  parser.add_argument("--device_batch_size", default="1,4,8", help="rows per device per pass")
  parser.add_argument("--length", type=int, default=512)
  parser.add_argument("--precision", default="float32")
  parser.add_argument("--replicated", default="1", help="rows per device to also compile with "
                      "parameters and Adam state replicated, for comparison ('' for none)")
  parser.add_argument("--no_doc", action="store_true")
  parser.add_argument("--variant", type=int, help=argparse.SUPPRESS)
  parser.add_argument("--layout", default="fsdp", help=argparse.SUPPRESS)
  parser.add_argument("--json", help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.variant:
    with open(args.json, "w") as f:
      json.dump(measure(args.devices, args.variant, args.length, args.precision, args.layout == "replicated"), f)
    return 0
  command = common.command_line()
  env = {"XLA_FLAGS": f"--xla_force_host_platform_device_count={args.devices}", "JAX_PLATFORMS": "cpu"}
  variants = [(rows, "fsdp") for rows in args.device_batch_size.split(",")]
  variants += [(rows, "replicated") for rows in args.replicated.split(",") if rows]
  runs = [common.run_variant("bench.train_memory", ["--variant", rows, "--layout", layout, "--devices",
                                                    str(args.devices), "--length", str(args.length),
                                                    "--precision", args.precision], env)
          for rows, layout in variants]
  common.save_results("train_memory", {"runs": runs, "command": command})
  body = report(runs, command)
  print(body)
  if not args.no_doc:
    common.update_doc("train memory", body)
  return 0


if __name__ == "__main__":
  sys.exit(main())
