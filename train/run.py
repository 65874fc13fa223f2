"""`python -m train.run`: fine-tune the classifier with the seed's recipe (../shared contract).

    python -m train.run --data 'gs://bucket/annotations/*.parquet' --output gs://bucket/run1 \
        [--model nlpai-lab/KoE5] [--no_freeze_encoder] [--epochs 20 | --max_steps N] ...

Parses flags into a TrainConfig and hands it to train.loop; nothing else happens here.
"""
from __future__ import annotations

import logging
import sys

import options


def parser():
  """The flags, from their declarations (options/catalog.py; defaults from train/config.py)."""
  return options.parser("train.run", doc=__doc__.split("\n\n")[0])


def main(argv=None) -> int:
  p = parser()
  from train.config import TrainConfig
  try:
    config = TrainConfig(**vars(p.parse_args(argv)))
  except ValueError as err:
    p.error(str(err))
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
  logging.getLogger("absl").setLevel(logging.WARNING)  # Orbax narrates every save at INFO
  from train import hosts
  if hosts.should_initialize(config.distributed):
    import jax
    jax.distributed.initialize()  # before any other JAX call; TPU slices configure themselves
    logging.info("joined %d hosts as process %d", jax.process_count(), jax.process_index())
  from model import hub
  from model.checkpoint import PickleRefused
  from pipeline import faults
  from train.loop import train_and_evaluate  # imports JAX; after initialize
  try:
    summary = train_and_evaluate(config)
  except (faults.Fault, hub.ModelUnavailable, PickleRefused, FileNotFoundError) as err:
    # The taxonomy decides: exit 2 the user's to fix (a model or shard that is not there), 1 a
    # machine's fault after its retries (rerun). The message says which; a traceback would bury
    # it. Any other exception, a ValueError raised mid-training included, is left to end the
    # run with its traceback and exit 1, as before.
    logging.error("%s", err)
    return faults.exit_code(err)
  print(summary["report"]["table"])
  print(f"best step {summary['best']['step']}: macro F1 {summary['best']['macro_f1']:.3f}, "
        f"binary F1 {summary['best']['binary_f1']:.3f}; model in {summary['output']}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
