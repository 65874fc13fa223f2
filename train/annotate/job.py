"""One annotation run: sample, ask, write, summarize. One process, asyncio: the work is waiting
on a remote endpoint, so --concurrency requests in flight cost one thread (docs/architecture.md,
"Annotation")."""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import signal
import time
import urllib.parse
from typing import Iterator

from pipeline import faults
from pipeline.records import Document, Rejected
from train.annotate import client, lease, prompt as prompts, sample as sampling, store
from train.annotate.config import AnnotateConfig

log = logging.getLogger("koedu.annotate")
READ_BATCH = 256  # documents read per hop to the reading thread
_DONE = object()


# Not one of scoring's record codes (pipeline/faults.py): only annotation asks an LLM.
UNREADABLE_ANSWER = "unreadable_answer"


class Interrupted(faults.MachineFault):
  """SIGTERM or SIGINT: what was answered is written; a rerun finishes (exit 1)."""


class _Parts:
  """Results not yet written, and the writing of them as parts: by one flusher task while the run
  goes, then once more, synchronously, at its end. A write is never cancelled: a cancelled
  to_thread that no thread had started yet would drop its part without a word."""

  def __init__(self, output: str, flush_every: int, run: str):
    self.output, self.flush_every = output, flush_every
    self.run, self.seq = run, 0
    self.annotated: list[dict] = []
    self.errors: list[dict] = []
    self.full = asyncio.Event()
    # Set while the buffer has room: a worker waits for it before asking, so that a writer
    # slower than the answers holds the run back instead of letting unwritten answers pile
    # up. A crash costs at most 2 x (flush_every + concurrency) answers: the part being
    # written and the one filling.
    self.room = asyncio.Event()
    self.room.set()
    self.closing = False
    self.written = 0  # documents in parts written by this run

  def add(self, kind: str, row: dict) -> None:
    (self.annotated if kind == "annotated" else self.errors).append(row)
    if len(self.annotated) + len(self.errors) >= self.flush_every:
      self.full.set()
      self.room.clear()

  def _take(self):
    annotated, errors = self.annotated, self.errors
    self.annotated, self.errors = [], []
    self.full.clear()
    self.room.set()
    self.seq += 1
    return f"part-{self.run}-{self.seq - 1:05d}", annotated, errors

  async def keep_flushing(self, seconds: float) -> None:
    while not self.closing:
      try:
        await asyncio.wait_for(self.full.wait(), seconds)
      except asyncio.TimeoutError:
        pass
      if self.annotated or self.errors:
        name, annotated, errors = self._take()
        await asyncio.to_thread(store.write_part, self.output, name, annotated, errors)
        self.written += len(annotated) + len(errors)

  async def close(self, flusher: asyncio.Task) -> None:
    """Lets the write in progress finish, then writes the rest."""
    self.closing = True
    self.full.set()
    try:
      await flusher
    finally:
      if self.annotated or self.errors:
        name, annotated, errors = self._take()
        store.write_part(self.output, name, annotated, errors)
        self.written += len(annotated) + len(errors)


def _pending(todo: dict[str, list[int]], config: AnnotateConfig) -> Iterator[Document | Rejected]:
  for source, rows in todo.items():
    yield from sampling.documents(source, rows, config.text_field, config.id_field)


def _next_batch(documents: Iterator, n: int) -> list:
  batch = []
  for item in documents:
    batch.append(item)
    if len(batch) == n:
      break
  return batch


class _Run:
  def __init__(self, config: AnnotateConfig, prompt: prompts.Prompt, endpoint: client.Endpoint,
                parts: _Parts, total: int):
    self.config, self.prompt, self.endpoint, self.parts, self.total = config, prompt, endpoint, parts, total
    self.done = self.annotated = self.unreadable = self.tokens_in = self.tokens_out = 0
    self.started, self.cpu = time.monotonic(), time.process_time()

  async def feed(self, documents: Iterator, queue: asyncio.Queue) -> None:
    # The reader is blocking (fsspec, decompression): it runs in a thread, a batch at a time,
    # and the bounded queue holds it back to the pace of the answers.
    while batch := await asyncio.to_thread(_next_batch, documents, READ_BATCH):
      for item in batch:
        await queue.put(item)
    for _ in range(self.config.concurrency):
      await queue.put(_DONE)

  async def work(self, queue: asyncio.Queue) -> None:
    while True:
      await self.parts.room.wait()
      if (item := await queue.get()) is _DONE:
        return
      if isinstance(item, Rejected):
        self.parts.add("error", {"source": item.source, "row": item.row, "reason": item.reason, "raw": item.raw})
      else:
        await self.annotate(item)
      self.done += 1

  async def annotate(self, doc: Document) -> None:
    """Asks once, and once more if no score can be read from the answer."""
    content = self.prompt.render(doc.text, self.config.max_chars)
    spent_in = spent_out = 0
    for _ in range(2):
      answer = await self.endpoint.ask(content)
      spent_in += answer.prompt_tokens
      spent_out += answer.completion_tokens
      score = prompts.parse_score(answer.text)
      if score is not None:
        break
    self.tokens_in += spent_in
    self.tokens_out += spent_out
    if score is None:
      self.unreadable += 1
      self.parts.add("error", {
          "source": doc.source, "row": doc.row, "raw": answer.text[:10_000],
          "reason": f"{UNREADABLE_ANSWER}: no 'score: N' (N in 0-5) in 2 answers; finish_reason "
                    f"{answer.finish_reason}", "prompt_tokens": spent_in, "completion_tokens": spent_out})
      return
    self.annotated += 1
    self.parts.add("annotated", {
        "id": doc.id, "source": doc.source, "row": doc.row, "text": doc.text, "score": score,
        "answer": answer.text, "llm": self.config.llm, "prompt_sha256": self.prompt.sha256,
        "prompt_tokens": spent_in, "completion_tokens": spent_out})

  def progress(self) -> str:
    seconds = max(1e-9, time.monotonic() - self.started)
    c = self.endpoint.counters
    return (f"{self.done:,}/{self.total:,} documents ({100 * self.done / max(1, self.total):.1f}%), "
            f"{self.done / seconds:.1f} documents/s, tokens {self.tokens_in:,} in "
            f"{self.tokens_out:,} out ({(self.tokens_in + self.tokens_out) / seconds:,.0f}/s), "
            f"{c.requests:,} requests, {c.retries:,} retries {c.by_fault or ''}, "
            f"{self.unreadable:,} unreadable, {self.parts.written:,} written")

  async def report(self, seconds: float) -> None:
    while True:
      await asyncio.sleep(seconds)
      log.info("annotate: %s", self.progress())

  def summary(self) -> dict:
    seconds = time.monotonic() - self.started
    c = self.endpoint.counters
    return {"documents": self.done, "seconds": round(seconds, 3),
            "cpu_seconds": round(time.process_time() - self.cpu, 3),  # this process's, all threads
            "documents_per_second": round(self.done / seconds, 3) if seconds else None,
            "requests": c.requests, "retries": c.retries, "faults": c.by_fault,
            "backoff_seconds": round(c.waited_seconds, 3),
            "tokens": {"prompt": self.tokens_in, "completion": self.tokens_out}}


async def _annotate(config: AnnotateConfig, prompt, todo, total: int, api_key: str | None,
                    summary: dict, run_id: str) -> None:
  """Asks for every document of `todo`; `summary` receives what this run did, failed or not."""
  main = asyncio.current_task()
  loop = asyncio.get_running_loop()
  for sig in (signal.SIGTERM, signal.SIGINT):
    loop.add_signal_handler(sig, main.cancel)
  parts = _Parts(config.output, config.flush_every, run_id)
  queue: asyncio.Queue = asyncio.Queue(maxsize=2 * config.concurrency)
  async with client.Endpoint(config, api_key) as endpoint:
    run = _Run(config, prompt, endpoint, parts, total)
    flusher = asyncio.create_task(parts.keep_flushing(config.flush_seconds))
    reporter = asyncio.create_task(run.report(config.progress_seconds))
    try:
      async with asyncio.TaskGroup() as group:
        group.create_task(run.feed(_pending(todo, config), queue))
        for _ in range(config.concurrency):
          group.create_task(run.work(queue))
    except asyncio.CancelledError:
      raise Interrupted(f"interrupted after {run.done:,} documents") from None
    except BaseExceptionGroup as group:
      # The first fault stops every worker; the answers already in hand are still written.
      raise group.exceptions[0] from None
    finally:
      reporter.cancel()
      await parts.close(flusher)
      log.info("annotate: %s", run.progress())
      summary.update(run.summary())


def _without_user(url: str) -> str:
  parts = urllib.parse.urlsplit(url)
  return parts._replace(netloc=parts.netloc.rsplit("@", 1)[-1]).geturl()


def run(config: AnnotateConfig) -> dict:
  """Annotates what the output does not hold yet; returns stats.json's contents."""
  api_key = os.environ.get(config.api_key_env)
  if config.api_key_env != "OPENAI_API_KEY" and api_key is None:
    raise faults.UsageError(f"--api_key_env {config.api_key_env}: that variable is not set")
  prompt = prompts.load(config.prompt)
  sources = sampling.expand(config.input)  # before claiming: a glob that matches nothing is fixed freely
  record = store.settings(config, prompt.sha256)
  run_id = store.run_id()
  with lease.Lease(config.output, run_id):  # before reading what is finished: one run asks at a time
    return _annotate_output(config, prompt, sources, record, run_id, api_key)


def _annotate_output(config: AnnotateConfig, prompt, sources, record: dict, run_id: str,
                     api_key: str | None) -> dict:
  store.claim(config.output, record)
  started = time.monotonic()
  sample = sampling.draw(sources, config.sample, config.seed)
  log.info("annotate: sampled %s of %s rows in %s shards in %.1fs", f"{len(sample.rows):,}",
           f"{sample.total_rows:,}", f"{sample.shards:,}", time.monotonic() - started)
  done = store.finished(config.output)
  missing = [r for r in sample.unreadable if (r.source, None) not in done]
  if missing:  # a shard that could not be read is said once, not silently left out
    for r in missing:
      log.warning("annotate: %s: %s", r.source, r.reason)
    store.write_part(config.output, f"part-{run_id}-shards", [],
                     [{"source": r.source, "row": None, "reason": r.reason, "raw": r.raw} for r in missing])
  todo = sample.by_shard(done)
  total = sum(len(rows) for rows in todo.values())
  log.info("annotate: %s sampled documents already done, %s to ask %s at concurrency %d",
           f"{len(sample.rows) - total:,}", f"{total:,}", config.llm, config.concurrency)
  # Every setting of this invocation (those that may change between runs included); an
  # endpoint URL's user and password, if it has them, stay out.
  this_run: dict = {"settings": {**dataclasses.asdict(config), "input": list(config.input),
                                 "endpoint": _without_user(config.endpoint)}}
  try:
    if total:
      asyncio.run(_annotate(config, prompt, todo, total, api_key, this_run, run_id))
  finally:
    stats = store.summarize(config.output, sample, record, this_run)
  return stats
