"""`python -m train.annotate`: score a sample of a corpus 0-5 with an LLM, as labels for train.run.

  python -m train.annotate --input 'gs://b/corpus/*.jsonl.zst' --output gs://b/labels \\
      --endpoint http://vllm:8000/v1 --llm Qwen/Qwen2.5-32B-Instruct --sample 500000 [--seed 0] \\
      [--prompt FILE] [--concurrency 16] [--requests_per_minute R]

  python -m train.run --data 'gs://b/labels/annotations/*.parquet' --output gs://b/model

The API key, if the endpoint wants one, is read from $OPENAI_API_KEY (or the variable
--api_key_env names), never from a flag. Exit status: 0 done, 1 the endpoint failed after its
retries or the run was interrupted (what was answered is written: rerun the same command to
finish), 2 a usage or settings error found before any request.
"""
from __future__ import annotations

import logging

import options
from train.annotate.config import AnnotateConfig


def parser():
  """The flags, from their declarations (options/catalog.py; defaults from train/annotate/config.py)."""
  return options.parser("train.annotate", doc=__doc__)


def main(argv=None) -> int:
  p = parser()
  try:
    config = AnnotateConfig(**vars(p.parse_args(argv)))
  except ValueError as err:
    p.error(str(err))
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
  logging.getLogger("aiohttp").setLevel(logging.WARNING)
  from pipeline import faults
  from train.annotate import job
  try:
    stats = job.run(config)
  except Exception as err:  # the taxonomy decides: exit 2 the user's to fix, 1 rerun to finish
    code = faults.exit_code(err)
    if not isinstance(err, (faults.Fault, ValueError, FileNotFoundError)):
      raise  # a bug: its traceback is the message
    logging.error("%s", err)  # a traceback would bury the message
    return code
  if not stats["complete"]:  # every sampled document should be in a part by now
    logging.error("%s: %s of %s sampled documents are in no part; rerun the same command",
                  config.output, f"{stats['sampled'] - stats['annotated'] - stats['errored']:,}", f"{stats['sampled']:,}")
    return 1
  print(f"koedu: {stats['annotated']:,} of {stats['sampled']:,} sampled documents annotated, "
        f"{stats['errored']:,} in errors/ {stats['errors_by_reason']}; scores {stats['score_histogram']}; "
        f"tokens {stats['tokens']['prompt']:,} in, {stats['tokens']['completion']:,} out; in {config.output}")
  return 0


if __name__ == "__main__":
  # Without the interpreter's teardown, as pipeline.run ends: pyarrow's native threads racing
  # their static destructors aborted one test run after SIGTERM ("terminate called without an
  # active exception", exit -6 instead of 1) once its answers were written.
  from pipeline import process
  process.exit_now(main())
