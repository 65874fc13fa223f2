"""Run by test_agreement.py as two processes joined by jax.distributed on CPU, as two hosts of a
slice: each reads its own glob, and prints whether the hosts' data check let it through."""
from __future__ import annotations

import json
import sys

import jax


def main(process_id: str, port: str, *globs: str):
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(f"localhost:{port}", num_processes=2, process_id=int(process_id))
  from train import agreement
  from train.config import TrainConfig
  from train.prepare import split
  results = []
  for glob in globs:  # one check per glob, every host in step
    train, held_out, _ = split(TrainConfig(data=(glob,), output="-", eval_size=0.25))
    try:
      agreement.check_hosts(agreement.fingerprint(train, held_out))
      results.append("agreed")
    except AssertionError as err:
      results.append(str(err).split(". Expected")[0])
  print("RESULT " + json.dumps(results), flush=True)


if __name__ == "__main__":
  main(*sys.argv[1:])
