"""train.annotate against the test chat server (bench/chat_server.py) in its own process.

  python -m bench.annotate faults [--documents 10000]   # 10% faults, SIGKILL midway, resume: exact accounting
  python -m bench.annotate rate [--documents 3000]      # requests/s at concurrency 1, 16, 64
  python -m bench.annotate sample [--documents 400000]  # what drawing the sample costs per row

`faults`: every sampled document exactly once in annotations/ or errors/ (errors only for
unreadable answers and the rows the reader rejects), and no finished document (one in a written
part when the process was killed) asked again after the kill, as the server counts requests.
`rate`: requests/s against a server that answers at once and one that takes 50 ms (a stand-in
for a model's time to answer), with the client's CPU seconds per request, which bound what one
process can send. Prints JSON; figures go to docs/benchmarks.md by hand.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "PYTHONPATH": REPO}


def log(msg: str) -> None:
  print(msg, file=sys.stderr, flush=True)


class Server:
  """The chat server as a separate process, so that its CPU is not the client's."""

  def __init__(self, **faults):
    self.proc = subprocess.Popen([sys.executable, "-m", "bench.chat_server", "--faults", json.dumps(faults)],
                                 cwd=REPO, env=ENV, stdout=subprocess.PIPE, text=True)
    self.url = self.proc.stdout.readline().strip()
    self.base = self.url[:-len("/v1")]

  def stats(self) -> dict:
    with urllib.request.urlopen(self.base + "/stats") as response:
      return json.loads(response.read())

  def cpu_seconds(self) -> float:
    with open(f"/proc/{self.proc.pid}/stat") as f:
      fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

  def close(self) -> None:
    self.proc.terminate()
    self.proc.wait()


def command(corpus: str, out: str, url: str, sample: int, *extra: str) -> list[str]:
  return [sys.executable, "-m", "train.annotate", "--input", os.path.join(corpus, "*"), "--output", out,
          "--endpoint", url, "--llm", "bench-llm", "--sample", str(sample), *extra]


def corpus(directory: str, documents: int) -> dict:
  from bench import annotate_corpus
  shards = 10
  return annotate_corpus.write(directory, per_shard=documents * 11 // 10 // shards, shards=shards, broken=5)


def accounting(out: str, sample, rows: dict, finished: set, at_kill: dict, after: dict) -> dict:
  """Checks the invariants (AssertionError if one fails) and counts what the run did."""
  import collections

  import pyarrow.parquet as pq
  from bench.chat_server import expected_score
  annotated, errors = [], []
  for name in os.listdir(os.path.join(out, "annotations")):
    annotated += pq.read_table(os.path.join(out, "annotations", name)).to_pylist()
  for name in os.listdir(os.path.join(out, "errors")):
    errors += [json.loads(line) for line in open(os.path.join(out, "errors", name), encoding="utf-8")]
  sampled = {(source, row) for _, source, row in sample.rows}
  landed = [(r["source"], r["row"]) for r in annotated] + [(e["source"], e["row"]) for e in errors]
  assert len(landed) == len(set(landed)) == len(sampled) and set(landed) == sampled, "not exactly once"
  assert all(r["score"] == expected_score(rows[(r["source"], r["row"])]) for r in annotated)
  reasons = collections.Counter(e["reason"].split(":")[0] for e in errors)
  for e in errors:
    n = rows[(e["source"], e["row"])]
    assert (n is None) if e["reason"].split(":")[0] != "unreadable_answer" else (n % 97 == 0)
  requests = lambda stats, n: stats["requests"].get(str(n), 0)
  again = [n for n in finished if requests(after, n) != requests(at_kill, n)]
  assert not again, f"{len(again)} finished documents asked again"
  lost = [n for n, count in at_kill["answered"].items() if int(n) not in finished]
  return {
      "sampled": len(sampled), "annotated": len(annotated), "errors": dict(reasons),
      "finished_at_kill": len(finished), "finished_asked_again": len(again),
      "answered_before_kill_not_written_asked_again": len(lost),
      "requests": sum(after["requests"].values()), "requests_before_kill": sum(at_kill["requests"].values()),
      "faults_injected": after["faulted"], "fault_share": round(sum(after["faulted"].values()) /
                                                                 sum(after["requests"].values()), 4),
      "stats_json": json.load(open(os.path.join(out, "stats.json")))}


def faults(documents: int, work: str) -> dict:
  from train.annotate import sample as sampling, store
  rows = corpus(os.path.join(work, "corpus"), documents)
  out = os.path.join(work, "out")
  server = Server(rate=0.1, slow_seconds=1.0, unreadable_every=97, flaky_every=89, latency=0.01)
  extra = ["--concurrency", "32", "--timeout_seconds", "0.5", "--backoff_seconds", "0.05",
           "--max_backoff_seconds", "1", "--flush_every", "256", "--flush_seconds", "2", "--progress_seconds", "5"]
  try:
    started = time.monotonic()
    proc = subprocess.Popen(command(os.path.join(work, "corpus"), out, server.url, documents, *extra),
                            cwd=REPO, env=ENV)
    parts = os.path.join(out, "annotations")
    written = lambda: [n for n in (os.listdir(parts) if os.path.isdir(parts) else []) if not n.startswith(".")]
    while len(written()) < documents // 2 // 256:  # about half way
      time.sleep(0.05)
      assert proc.poll() is None, "finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_after = time.monotonic() - started
    time.sleep(0.5)
    finished = {rows[pair] for pair in store.finished(out) if rows.get(pair) is not None}
    at_kill = server.stats()
    resumed = subprocess.run(command(os.path.join(work, "corpus"), out, server.url, documents, *extra),
                             cwd=REPO, env=ENV)
    assert resumed.returncode == 0
    after = server.stats()
    sample = sampling.draw(sampling.expand([os.path.join(work, "corpus", "*")]), documents, 0)
    report = accounting(out, sample, rows, finished, at_kill, after)
    report.update(killed_after_seconds=round(killed_after, 1), total_seconds=round(time.monotonic() - started, 1))
    return report
  finally:
    server.close()


def rate(documents: int, work: str) -> dict:
  directory = os.path.join(work, "corpus")
  corpus(directory, documents)
  results = {}
  for latency in (0.0, 0.05):
    server = Server(latency=latency)
    try:
      for concurrency in (1, 16, 64):
        out = os.path.join(work, f"out-{latency}-{concurrency}")
        cpu = server.cpu_seconds()
        subprocess.run(command(directory, out, server.url, documents, "--concurrency", str(concurrency),
                               "--progress_seconds", "600"), cwd=REPO, env=ENV, check=True,
                       stdout=subprocess.DEVNULL)
        run = json.load(open(os.path.join(out, "stats.json")))["this_run"]
        results[f"latency {latency * 1000:.0f} ms, concurrency {concurrency}"] = {
            "requests": run["requests"], "seconds": run["seconds"],
            "requests_per_second": round(run["requests"] / run["seconds"], 1),
            "client_cpu_ms_per_request": round(1000 * run["cpu_seconds"] / run["requests"], 3),
            "server_cpu_ms_per_request": round(1000 * (server.cpu_seconds() - cpu) / run["requests"], 3)}
        log(f"latency {latency}, concurrency {concurrency}: {results[list(results)[-1]]}")
    finally:
      server.close()
  return results


def sampling_cost(documents: int, work: str) -> dict:
  """Rows/s of the two passes over the shards (draw: every row hashed; documents: the sampled
  rows parsed), JSON lines (zstd) and Parquet, documents of about 1,500 characters."""
  import pyarrow as pa
  import pyarrow.parquet as pq
  import zstandard
  from model.random_checkpoint import korean_sentences
  from train.annotate import sample as sampling
  texts = [" ".join(korean_sentences(12, seed=i)) for i in range(200)]
  results = {}
  for kind in ("jsonl.zst", "parquet"):
    directory = os.path.join(work, kind)
    os.makedirs(directory)
    per_shard = documents // 4
    for s in range(4):
      records = [{"id": f"{s}-{i}", "text": texts[i % len(texts)], "url": f"https://example.kr/{i}"}
                 for i in range(per_shard)]
      path = os.path.join(directory, f"shard-{s}.{kind}")
      if kind == "parquet":
        pq.write_table(pa.Table.from_pylist(records), path)
      else:
        with open(path, "wb") as f:
          f.write(zstandard.ZstdCompressor().compress("".join(json.dumps(r, ensure_ascii=False) + "\n"
                                                               for r in records).encode()))
    sources = sampling.expand([os.path.join(directory, "*")])
    started = time.process_time(), time.monotonic()
    sample = sampling.draw(sources, documents // 4, seed=0)
    drew = time.process_time() - started[0], time.monotonic() - started[1]
    started = time.process_time(), time.monotonic()
    read = sum(1 for source, rows in sample.by_shard(set()).items()
               for _ in sampling.documents(source, rows, "text", "id"))
    second = time.process_time() - started[0], time.monotonic() - started[1]
    results[kind] = {"rows": sample.total_rows, "sampled": read,
                     "draw_rows_per_cpu_second": round(sample.total_rows / drew[0]),
                     "draw_wall_seconds": round(drew[1], 2),
                     "documents_rows_per_cpu_second": round(sample.total_rows / second[0]),
                     "documents_wall_seconds": round(second[1], 2)}
    log(f"{kind}: {results[kind]}")
  return results


def main() -> None:
  p = argparse.ArgumentParser()
  p.add_argument("what", choices=("faults", "rate", "sample"))
  p.add_argument("--documents", type=int, default=None)
  args = p.parse_args()
  work = tempfile.mkdtemp(prefix="koedu-annotate-bench-")
  try:
    if args.what == "faults":
      report = faults(args.documents or 10_000, work)
    elif args.what == "rate":
      report = rate(args.documents or 3_000, work)
    else:
      report = sampling_cost(args.documents or 400_000, work)
    print(json.dumps(report, indent=2))
  finally:
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
  main()
