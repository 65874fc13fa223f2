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
  from train.loop import train_and_evaluate  # imports JAX; after initialize
  try:
    summary = train_and_evaluate(config)
  except (hub.ModelUnavailable, PickleRefused, FileNotFoundError) as err:
    # The user's to fix (a model or shard that is not there): the message says how; a
    # traceback would only bury it.
    logging.error("%s", err)
    return 2
  print(summary["report"]["table"])
  print(f"best step {summary['best']['step']}: macro F1 {summary['best']['macro_f1']:.3f}, "
        f"binary F1 {summary['best']['binary_f1']:.3f}; model in {summary['output']}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
