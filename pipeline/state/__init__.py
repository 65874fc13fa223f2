"""The run's state, in one place: where a run's files live, the settings it was made with, what
is done (and how, and from which version of each shard), and what is left to do.

- layout.py: every path under --output, and the state as file names.
- settings.py: `_run.json` (a rerun with other settings is refused by name), and what the
  launcher learns of the output: two calls, whatever its size.
- progress.py: chunk markers and unit summaries; the shard's identity and the precision each
  chunk was scored at, and the refusals when a resume would mix either.
- plan.py: the Beam steps that match the shards, list the state (32 listings) and plan the units
  left, on the workers.

Everything else asks this package: no other module names a state file, reads a marker or
decides what is done.
"""
from pipeline.state.layout import (DONE, EDU, ERRORS, HISTOGRAM, PARTITIONS, RUN, SCORES, STATS,
                                   UNITS, chunk_name, output_path)
from pipeline.state.progress import (ShardChanged, check_precision, check_unchanged, done_chunk,
                                     mark_chunk, shard_identity, write_summary)
from pipeline.state.settings import Output, OutputMismatch, check_or_write, open_output, recorded, wanted

__all__ = ["DONE", "EDU", "ERRORS", "HISTOGRAM", "PARTITIONS", "RUN", "SCORES", "STATS", "UNITS",
           "chunk_name", "output_path", "ShardChanged", "check_precision", "check_unchanged", "done_chunk", "mark_chunk",
           "shard_identity", "write_summary", "Output", "OutputMismatch", "check_or_write",
           "open_output", "recorded", "wanted"]
