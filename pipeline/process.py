"""How koedu's command-line tools start and end."""
from __future__ import annotations

import atexit
import gc
import logging
import os
import sys


def exit_now(status: int) -> None:
  """Exit once everything is written, without the interpreter's teardown. With JAX, XLA and Beam
  loaded, clearing every module and freeing every object takes 0.5-0.8 s on this machine, paid
  by every local run for nothing; and native libraries' static destructors racing their own
  threads at teardown can abort a process whose work is done ("terminate called without an
  active exception" from pipeline.compare under load). atexit handlers still run, and the
  streams are flushed."""
  atexit._run_exitfuncs()
  logging.shutdown()
  sys.stdout.flush()
  sys.stderr.flush()
  os._exit(status)


def imports_done() -> None:
  """The end of a command-line tool's start-up. Its module turned the cyclic garbage collector
  off before its imports (`if __name__ == "__main__": gc.disable()` above them): every collection
  while JAX, flax and Beam load scans every object loaded so far, 0.5 s of pipeline.run's 1.8 s
  of imports. What the imports made lives as long as the process, so it is frozen out of later
  collections, and collecting resumes for what the run itself allocates."""
  gc.freeze()
  gc.enable()


def start_logging(level: int = logging.WARNING, fmt: str | None = None) -> None:
  """Logging for a command-line tool, set up before it imports Beam. Without Beam's gcp extra
  (the README's install) `import apache_beam` says through the root logger that its BigQuery
  client is missing: a warning on every run, and, the root logger having no handler yet, one
  that sets up logging in its own format first. koedu never uses BigQuery: that notice is
  dropped, and everything else keeps the tool's format."""
  logging.basicConfig(level=level, **({"format": fmt} if fmt else {}))
  for handler in logging.getLogger().handlers:
    if _beams_bigquery_notice not in handler.filters:
      handler.addFilter(_beams_bigquery_notice)


def _beams_bigquery_notice(record: logging.LogRecord) -> bool:
  return not (record.name == "root" and record.getMessage().startswith("apitools not found"))
