"""What a worker process holds, loaded once (beam's Shared) for every thread of it: the
tokenizer, the pools of host and writer threads (pipeline/stages.py says what runs where), and
the device service, or a proxy to the one process of the machine that owns the devices.

The devices load and compile in the background: the first units are read and tokenized
meanwhile, and their batches wait for the devices, not the other way round. A TPU worker
compiling for a minute spends that minute filling the queue.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import threading

import numpy as np

from model.config import ModelConfig
from model.hub import ModelInfo
from model.tokenize import DocumentTokenizer
from pipeline.faults import UsageError
from pipeline.options import ScoringConfig
from pipeline.stages import then

log = logging.getLogger(__name__)
WRITER_THREADS = 16  # uploads wait on the network, not the CPU
Future = concurrent.futures.Future


def load_device_service(config: ScoringConfig, info: ModelInfo):
  """The devices' owner: the model fetched, verified and loaded. It takes batches at once; a
  shape is compiled when a batch first needs it. On accelerators every shape also compiles in
  the background meanwhile (the host's cores are otherwise idle while the devices compute);
  on CPU that would take cores from the scoring for shapes a job may never use: 192 web
  documents use 7 of 18."""
  from model import hub
  from model.runner import load_runner
  from model.text_scorer import enable_compilation_cache
  from pipeline.device import DeviceService
  config.use_caches()
  enable_compilation_cache(config.compilation_cache_dir)
  model_dir = hub.fetch(info, cache_dir=config.model_cache_dir)
  runner = load_runner(model_dir, config.runner_config(), precision=config.dtype,
                       allow_pickle=config.allow_pickle)
  if runner.runtime.platform != "cpu":
    threading.Thread(target=_compile_ahead, args=(runner,), name="koedu-compile", daemon=True).start()
  service = DeviceService(runner, retries=config.device_retries)
  log.info("the devices are ready: %s precision, %s attention, %d %s device(s)", runner.runtime.precision,
           runner.runtime.attention, runner.runtime.devices, runner.runtime.platform)
  return service


def _compile_ahead(runner) -> None:
  try:
    runner.warmup()
  except Exception as err:  # the batch that needs the shape compiles it again, with the retries
    log.warning("compiling ahead failed (%s: %s); shapes compile when a batch needs them",
                type(err).__name__, str(err)[:300])


def _shared_device_service(config: ScoringConfig, info: ModelInfo):
  """A proxy to the machine's one device service, started by whichever process asks first."""
  from apache_beam.utils.multi_process_shared import MultiProcessShared
  tag = f"koedu-devices-{info.content_digest[7:23]}-{config.dtype}-{config.max_length}"
  return MultiProcessShared(lambda: load_device_service(config, info), tag=tag, always_proxy=True).acquire()


@dataclasses.dataclass
class Worker:
  tokenizer: DocumentTokenizer
  service: Future  # the DeviceService, or a proxy to it, once loaded
  host: concurrent.futures.ThreadPoolExecutor
  writers: concurrent.futures.ThreadPoolExecutor
  local: bool  # the service lives in this process: it takes batches without a thread waiting
  # Chunks in flight in the process, across all its harness threads: what bounds its memory
  # (about two per host thread, a chunk being a few tens of MB at most).
  slots: threading.BoundedSemaphore

  def start_scoring(self, ids: list[np.ndarray]) -> Future:
    """The scores of `ids`, once the devices are loaded and have scored them. A local service
    is handed them by the calling thread, which packs them (before the devices are loaded, the
    thread that loads them does, for every chunk that came meanwhile), and no thread waits on
    the devices; a proxy's call packs in the devices' process and blocks a writer thread."""
    if not ids:
      empty = Future()
      empty.set_result(np.zeros(0, np.float32))
      return empty
    if self.local:
      return then(self.service, lambda service: service.submit(ids))
    return then(self.service, lambda service: service.score(ids), self.writers)

  def precision(self) -> str:
    return self.service.result().describe()["precision"]


def load_worker(config: ScoringConfig, info: ModelInfo) -> Worker:
  from model import hub
  config.use_caches()
  local = not config.share_model_across_processes
  writers = concurrent.futures.ThreadPoolExecutor(WRITER_THREADS, thread_name_prefix="koedu-write")
  service = writers.submit(load_device_service if local else _shared_device_service, config, info)
  tokenizer = DocumentTokenizer(hub.fetch(info, cache_dir=config.model_cache_dir), config.max_length).load()
  embeddings = ModelConfig.from_hf_dict(info.config).vocab_size
  if tokenizer.vocab_size > embeddings:
    raise UsageError(f"{info.name}: the tokenizer has {tokenizer.vocab_size} tokens, the model "
                     f"{embeddings} embeddings")
  host = concurrent.futures.ThreadPoolExecutor(config.threads, thread_name_prefix="koedu-host")
  return Worker(tokenizer, service, host, writers, local, threading.BoundedSemaphore(2 * config.threads + 2))
