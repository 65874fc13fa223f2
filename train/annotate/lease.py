"""One annotation run at a time per output directory.

Two runs into one DIR would read the same finished set, ask the LLM for the same documents and
keep each label twice (parts are named per run). So a run holds a lease, `DIR/_active/<run>.json`
(its host, pid, start and last renewal), renewed by a thread every RENEW_SECONDS, and a run that
finds another's lease alive is refused (exit 2), naming it. A lease is dead once it has not been
renewed for EXPIRE_SECONDS, and at once when it names a process of this machine that is gone
(a run killed by SIGKILL: its rerun starts right away). A run writes its lease first and then
reads every lease, and is refused by any other alive: of two runs starting together at most one
goes on (both are refused if each sees the other's lease; a rerun of one then goes on). Without a
conditional write, which not every store fsspec reaches has, yielding is the answer that is
never wrong.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time

from pipeline import faults, io

log = logging.getLogger("koedu.annotate")
ACTIVE = "_active"
RENEW_SECONDS = 30.0
EXPIRE_SECONDS = 120.0  # four renewals missed: a run on another machine that died


class AnotherRun(faults.UsageError):
  """The output is being annotated by a run whose lease is alive."""


def machine() -> str:
  """This machine as leases name it: the host, and the pid namespace where there is one (two
  containers of one host may share a host name, never pids' meaning)."""
  try:
    namespace = os.stat("/proc/self/ns/pid").st_ino
  except OSError:
    namespace = 0
  return f"{socket.gethostname()}/{namespace}"


class Lease:
  """`with Lease(output, run):` holds the output for this run, or raises AnotherRun."""

  def __init__(self, output: str, run: str):
    self.directory, self.run = io.join(output, ACTIVE), run
    self.path = io.join(self.directory, f"{run}.json")
    self.record = {"run": run, "machine": machine(), "pid": os.getpid(), "started": time.time()}
    self._stop = threading.Event()
    self._renewer = threading.Thread(target=self._keep_renewing, name="koedu-lease", daemon=True)

  def __enter__(self) -> "Lease":
    self._write()
    others = [lease for lease in self._leases() if lease["run"] != self.run and self._alive(lease)]
    if others:
      io.remove(self.path)
      holder = min(others, key=lambda lease: lease["started"])
      since = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(holder["started"]))
      raise AnotherRun(
          f"{os.path.dirname(self.directory)} is being annotated by another run ({holder['run']}, pid "
          f"{holder['pid']} on {holder['machine']}, since {since}): two runs would ask for the same "
          f"documents and keep each label twice. Let it finish, or annotate into another --output. A "
          f"run that died leaves a lease that lapses {EXPIRE_SECONDS:.0f} s after its last renewal "
          f"(at once on the machine it ran on).")
    self._renewer.start()
    return self

  def __exit__(self, *exc) -> None:
    self._stop.set()
    if self._renewer.is_alive():
      self._renewer.join()
    try:
      io.remove(self.path)
    except Exception as err:  # the lease lapses by itself; the run's own outcome decides the exit
      log.warning("annotate: could not remove %s (%s); it lapses in %.0f s", self.path, err, EXPIRE_SECONDS)

  def _write(self) -> None:
    record = {**self.record, "renewed": time.time()}
    io.write_bytes_atomic(self.path, json.dumps(record).encode())

  def _keep_renewing(self) -> None:
    while not self._stop.wait(RENEW_SECONDS):
      try:
        self._write()
      except Exception as err:  # storage down for a while: the next renewal tries again
        log.warning("annotate: renewing the lease %s failed: %s", self.path, err)

  def _leases(self) -> list[dict]:
    leases = []
    for name in io.list_names(self.directory, ".json"):
      try:
        data = io.read_bytes(io.join(self.directory, name))
      except FileNotFoundError:  # removed by its run since the listing
        continue
      try:
        lease = json.loads(data)
      except ValueError:
        lease = None
      if not isinstance(lease, dict) or not {"run", "machine", "pid", "started", "renewed"} <= lease.keys():
        log.warning("annotate: %s is not a lease koedu wrote; it is ignored", name)
        continue
      leases.append(lease)
    return leases

  def _alive(self, lease: dict) -> bool:
    if time.time() - lease["renewed"] > EXPIRE_SECONDS:
      return False
    return lease["machine"] != self.record["machine"] or _process_exists(lease["pid"])


def _process_exists(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # another user's process
    return True
  return True
