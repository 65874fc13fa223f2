"""The encoder alone at each compiled shape, for each attention and each CPU dot library.

    python -m bench.shapes [--shapes 128x128,64x256,32x512,16x512] [--layers 4] [--seconds 6]

What chose the encoder's defaults (model/runtime.py): for every (rows x length),
attention ("batched": jax.nn.dot_product_attention; "rows": one row at a time; "fused": the
CPU kernel) and CPU dot library (this jaxlib's YNNPACK default, XLA's Eigen dots, or dots handed
to XNNPACK or oneDNN, set per compilation as the scorer does), the compiled base-width encoder's weight-matmul FLOP/s over every computed token. Rows
hold 64-token documents, so attention is block-diagonal as in packed rows. Fewer layers than
the model's 12 keep the run short; the work per layer is the same. A last column skips
attention altogether (v passes through; Eigen dots): the ceiling of everything else in the
encoder, and so what attention costs at each shape.
"""
from __future__ import annotations

import argparse
import time

from bench import common

_EIGEN = {"xla_cpu_experimental_ynn_fusion_type": ""}
COMPILERS = {"YNNPACK (jaxlib default)": None, "Eigen": _EIGEN,
             "XNNPACK": {**_EIGEN, "xla_cpu_experimental_xnn_fusion_type": "LIBRARY_FUSION_TYPE_DOT"},
             "oneDNN": {**_EIGEN, "xla_cpu_experimental_onednn_fusion_type": "LIBRARY_FUSION_TYPE_DOT"}}
SKIPPED = "attention skipped"


def _skip_attention(qkv, segment_ids):
  return qkv[:, :, 2]


def attentions() -> dict:
  """Every attention the runtime can choose, by name, and the skipped one."""
  from model import attention, fused_attention
  return {"batched": attention.batched_attention, "rows": attention.row_attention,
          "fused": fused_attention.fused_attention, SKIPPED: _skip_attention}


def cells() -> list[tuple[str, str]]:
  """(attention, dot library) pairs to time. XNNPACK and oneDNN only with the attention the
  scorer runs on CPU: a oneDNN compilation of XLA's attention once crashed the process."""
  pairs = [(a, c) for a in attentions() if a != SKIPPED for c in COMPILERS
           if a == "fused" or c in ("YNNPACK (jaxlib default)", "Eigen")]
  return pairs + [(SKIPPED, "Eigen")]


def measure(shapes, layers: int, seconds: float) -> list[list]:
  import jax
  import jax.numpy as jnp
  import numpy as np
  from flax import nnx

  from model.config import ModelConfig
  from model.xlmr import XLMRobertaClassifier
  timed = cells()
  cfg = ModelConfig(**{**common.SIZES["base"], "num_hidden_layers": layers}, vocab_size=1000,
                    max_position_embeddings=common.MAX_POSITIONS)
  # One model per attention (the attention is part of how a model is built), same parameters.
  models = {name: nnx.split(XLMRobertaClassifier(cfg, attention=fn, rngs=nnx.Rngs(0)))
            for name, fn in attentions().items()}
  flops_per_token = common.flops_per_token("base") * layers / common.SIZES["base"]["num_hidden_layers"]
  rows = []
  for batch, length in shapes:
    segments = np.repeat(np.arange(1, length // 64 + 2), 64)[:length]
    args = (jnp.full((batch, length), 5, jnp.int32),
            jnp.asarray(np.tile(segments, (batch, 1)), jnp.int32),
            jnp.asarray(np.tile(np.arange(length) % 64 + 2, (batch, 1)), jnp.int32),
            jnp.zeros((batch, 1), jnp.int32))
    row = [f"{batch}x{length}"]
    for attention, library in timed:
      options = COMPILERS[library]
      graphdef, state = models[attention]
      forward = jax.jit(lambda s, *a, graphdef=graphdef: nnx.merge(graphdef, s)(*a))
      run = forward.lower(state, *args).compile(compiler_options=options)
      run(state, *args).block_until_ready()
      calls, start = 0, time.perf_counter()
      while time.perf_counter() - start < seconds:
        run(state, *args).block_until_ready()
        calls += 1
      per_call = (time.perf_counter() - start) / calls
      row.append(f"{flops_per_token * batch * length / per_call / 1e9:.0f}")
      common.log(f"{row[0]} {attention} {options}: {row[-1]} GFLOP/s")
    rows.append(row)
  return rows


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--shapes", default="128x128,64x256,32x512,16x512")
  parser.add_argument("--layers", type=int, default=4)
  parser.add_argument("--seconds", type=float, default=6.0)
  args = parser.parse_args(argv)
  command = common.command_line()
  shapes = [tuple(int(x) for x in s.split("x")) for s in args.shapes.split(",")]
  common.wait_until_quiet()
  with common.Interference().measure() as busy:
    rows = measure(shapes, args.layers, args.seconds)
  header = ["rows x length"] + [f"{a}, {c}" if a == SKIPPED else f"{a} attention, {c}"
                                for a, c in cells()]
  body = "\n\n".join([
      common.provenance([{"others_busy": busy.fraction}], command),
      f"Base width, {args.layers} layers, random weights; GFLOP/s of the weight matmuls "
      f"(bench/common.py's count) over every computed token, averaged over {args.seconds:.0f} s "
      "of back-to-back calls per cell.",
      common.table(header, rows)])
  print(body)
  common.update_doc("shapes", body)
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
