"""Memory per device of a full fine-tune of XLM-RoBERTa-large over 8 devices, from XLA; and the
device batch train.run chooses for it on TPU slice shapes.

    python -m bench.train_memory [--device_batch_size 1,4,8] [--length 512] [--devices 8]
    python -m bench.train_memory --chips v5e-16,v4-8

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
# Slice shapes: JAX devices and memory per device (a v4 chip's two cores are one device).
CHIPS = {"v5e-16": (16, 16 * GIB), "v4-8": (4, 32 * GIB), "v5e-8": (8, 16 * GIB)}
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
  from model import placement
  from train import optim, steps
  from train.config import TrainConfig

  if replicated:
    placement.param_sharding = lambda mesh, shape: placement.replicated(mesh)
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
  row = lambda dtype, *shape: jax.ShapeDtypeStruct((rows, *shape), dtype, sharding=placement.rows(rt.mesh))
  batch = {"input_ids": row(jnp.int32, length), "segment_ids": row(jnp.int32, length),
           "position_ids": row(jnp.int32, length), "cls_index": row(jnp.int32, 1),
           "label": row(jnp.float32), "weight": row(jnp.float32), "document": row(jnp.int32)}
  scalar = lambda dtype, *shape: jax.ShapeDtypeStruct(shape, dtype, sharding=placement.replicated(rt.mesh))
  # Donation as on TPU (Steps leaves it off on CPU, where it only warns at run time).
  accumulate = jax.jit(run._accumulate, donate_argnums=(1,),
                       out_shardings=jax.tree.map(lambda x: x.sharding, sums))
  apply = jax.jit(run._apply, donate_argnums=(0, 1, 2),
                  out_shardings=(run.param_shardings, run.opt_shardings, placement.replicated(rt.mesh)))
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


def choose(devices: int, budget: int, batch_size: int, length: int, precision: str) -> dict:
  """train.run's own choice (train/memory.py) for a default full fine-tune of large on
  `devices` fake devices of `budget` bytes, compiled with the buffer donation TPUs get."""
  import jax
  from flax import nnx

  from model import runtime
  from model.config import ModelConfig
  from model.xlmr import XLMRobertaClassifier
  from train import memory, optim, steps
  from train.config import TrainConfig

  cfg = ModelConfig(**LARGE)
  rt = runtime.resolve(cfg, precision, "batched", devices=jax.devices()[:devices], training=True)
  abstract = nnx.eval_shape(lambda: XLMRobertaClassifier(cfg, **rt.model_kwargs(), rngs=nnx.Rngs(0)))
  graphdef, params = nnx.split(abstract, nnx.Param)
  config = TrainConfig(data=("-",), output="-", freeze_encoder=False, batch_size=batch_size)
  run = steps.Steps(graphdef, optim.optimizer(config, params, 1000), rt, params, cached=False,
                    frozen=False, dropout=True, donate=True)
  start = time.perf_counter()
  choice = memory.choose(run, params, batch_size=batch_size, length=length, budget=budget)
  return {"devices": devices, "budget": budget, "batch_size": batch_size, "length": length,
          "precision": precision, "seconds": time.perf_counter() - start, **choice.to_json()}


def choice_report(runs: dict, command: str) -> str:
  from train.memory import USABLE
  rows = []
  for name, r in runs.items():
    tried = ", ".join(f"{k}: {v / GIB:.1f}" for k, v in sorted(r["tried"].items(), key=lambda kv: int(kv[0])))
    rows.append([name, r["devices"], f"{r['budget'] / GIB:.0f}", f"{r['batch_size'] // r['devices']}",
                 r["rows_per_device"], r["passes"], f"{r['peak_bytes'] / GIB:.2f}",
                 f"{r['apply_peak_bytes'] / GIB:.2f}", tried])
  r = next(iter(runs.values()))
  return "\n\n".join([
      f"Command: `{command}` (from the repository root), {time.strftime('%Y-%m-%d %H:%M')}. "
      f"`train/memory.py`'s choice for `python -m train.run --no_freeze_encoder` with XLM-RoBERTa-large "
      f"(batch {r['batch_size']}, {r['length']}-token passes, `--dtype {r['precision']}`, dropout), "
      f"compiled for each slice's device count on fake CPU devices with TPU's buffer donation; "
      f"a pass fits when its peak is within {USABLE:.0%} of the device's memory. GiB per device.",
      common.table(["slice", "devices", "memory", "share of a step", "rows per pass", "passes a step",
                    "peak of a pass", "peak of AdamW's update", "peaks tried (rows: GiB)"], rows)])


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
  parser.add_argument("--chips", help=f"slice shapes to choose a device batch for, of {', '.join(CHIPS)}")
  parser.add_argument("--batch_size", type=int, default=2048, help="global batch, with --chips")
  parser.add_argument("--no_doc", action="store_true")
  parser.add_argument("--variant", type=int, help=argparse.SUPPRESS)
  parser.add_argument("--layout", default="fsdp", help=argparse.SUPPRESS)
  parser.add_argument("--json", help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.variant and args.layout == "choose":
    devices, budget = CHIPS[args.chips]
    with open(args.json, "w") as f:
      json.dump(choose(devices, budget, args.batch_size, args.length, args.precision), f)
    return 0
  if args.chips and not args.variant:
    command = common.command_line()
    runs = {}
    for name in args.chips.split(","):
      devices, _ = CHIPS[name]
      runs[name] = common.run_variant("bench.train_memory", [
          "--variant", "1", "--layout", "choose", "--chips", name, "--batch_size", str(args.batch_size),
          "--length", str(args.length), "--precision", args.precision],
          {"XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}", "JAX_PLATFORMS": "cpu"})
    common.save_results("train_device_batch", {"runs": runs, "command": command})
    body = choice_report(runs, command)
    print(body)
    if not args.no_doc:
      common.update_doc("train device batch", body)
    return 0
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
