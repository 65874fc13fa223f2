"""A chat-completions server on 127.0.0.1 for the annotation tests and bench: the protocol of
vLLM's OpenAI-compatible server, answers from a deterministic rule, and the faults endpoints
have, injected.

Documents are recognised by a marker `[doc N]` in the prompt (N an integer); the answer's score
is N % 6, stated in one of the shapes models use (`score_line`). Per document, it counts every
request and every answer given, served as JSON at GET /stats, so that a test can tell exactly
what was asked twice.

Faults (Faults below), drawn per request from a seeded generator, never more than
`max_faults_in_a_row` in a row for one document (so a client with enough retries always gets
through): 429 with Retry-After, 500, a connection dropped before or in the middle of the
answer, an answer slower than the client's timeout, a 200 whose body is not JSON. Unreadable
answers are a rule of the document, not a draw: N % unreadable_every == 0 always answers
without a score, N % flaky_every == 0 does so in its first answer only.

    python -m bench.chat_server --faults '{"rate": 0.1}'   # prints its base URL, serves until killed
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import dataclasses
import json
import random
import re
import sys
import threading
import time

from aiohttp import web

MARKER = re.compile(r"\[doc (\d+)\]")
SHAPES = ("Educational score: {n}", "**Score:** {n}", "점수: {n}", "score = {n}.")


@dataclasses.dataclass
class Faults:
  rate: float = 0.0  # share of requests that get a fault, split evenly over `kinds`
  kinds: tuple = ("429", "500", "drop", "cut", "slow", "garbled")
  retry_after: str = "0.05"  # the 429's Retry-After (seconds; real servers send whole ones)
  slow_seconds: float = 2.0  # a "slow" answer takes this long: set above the client's timeout
  max_faults_in_a_row: int = 3
  unreadable_every: int = 0  # N % this == 0: never a readable score (0: none)
  flaky_every: int = 0  # N % this == 0: unreadable on the first request only (0: none)
  latency: float = 0.0  # every answer takes this long (a model's time to answer)
  seed: int = 0
  model: str | None = None  # the one model served: another name gets a 404, as vLLM answers
  api_key: str | None = None  # the key a request must bear: anything else gets a 401


def expected_score(n: int) -> int:
  return n % 6


def score_line(n: int) -> str:
  return SHAPES[(n // 6) % len(SHAPES)].format(n=expected_score(n))


class ChatServer:
  def __init__(self, faults: Faults | None = None):
    self.faults = faults or Faults()
    self.requests = collections.Counter()  # doc -> requests received
    self.answered = collections.Counter()  # doc -> readable-or-not answers sent with a 200
    self.faulted = collections.Counter()  # kind -> faults injected
    self.refused = 0  # requests refused with a 401 or 404, before any document is looked at
    self.times = collections.defaultdict(list)  # doc -> monotonic time of each request
    self._in_a_row = collections.Counter()
    self._rng = random.Random(self.faults.seed)
    self.url = None
    self._loop = None
    self._thread = None

  # ------------------------------------------------------------------------------ protocol

  async def chat(self, request: web.Request) -> web.StreamResponse:
    f = self.faults
    if f.api_key and request.headers.get("Authorization") != f"Bearer {f.api_key}":
      self.refused += 1
      return web.json_response({"error": {"message": "invalid api key", "type": "auth"}}, status=401)
    body = await request.json()
    if f.model and body.get("model") != f.model:
      self.refused += 1
      return web.json_response({"error": {"message": f"The model `{body.get('model')}` does not exist.",
                                          "type": "NotFoundError"}}, status=404)
    content = body["messages"][-1]["content"]
    found = MARKER.search(content)
    doc = int(found.group(1)) if found else -1
    self.requests[doc] += 1
    self.times[doc].append(time.monotonic())
    if f.rate and self._in_a_row[doc] < f.max_faults_in_a_row and self._rng.random() < f.rate:
      self._in_a_row[doc] += 1
      kind = self._rng.choice(f.kinds)
      self.faulted[kind] += 1
      return await self._fault(kind, request)
    self._in_a_row[doc] = 0
    if f.latency:
      await asyncio.sleep(f.latency)
    unreadable = (f.unreadable_every and doc % f.unreadable_every == 0) or \
        (f.flaky_every and doc % f.flaky_every == 0 and self.answered[doc] == 0)
    answer = ("The extract reads like a forum post; I would not use it in class." if unreadable
              else f"The extract [doc {doc}] is judged by the test rule.\n{score_line(doc)}")
    self.answered[doc] += 1
    return web.json_response({
        "id": f"chatcmpl-{doc}-{self.requests[doc]}", "object": "chat.completion", "created": int(time.time()),
        "model": body["model"],
        "choices": [{"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": len(content) // 2, "completion_tokens": len(answer) // 2,
                  "total_tokens": len(content) // 2 + len(answer) // 2}})

  async def _fault(self, kind: str, request: web.Request) -> web.StreamResponse:
    if kind == "429":
      return web.json_response({"error": {"message": "rate limited", "type": "rate_limit"}}, status=429,
                               headers={"Retry-After": self.faults.retry_after})
    if kind == "500":
      return web.json_response({"error": {"message": "CUDA out of memory", "type": "server_error"}}, status=500)
    if kind == "garbled":
      return web.Response(text="<html>502 Bad Gateway</html>", content_type="application/json")
    if kind == "slow":
      await asyncio.sleep(self.faults.slow_seconds)
      return web.json_response({"error": "too late"}, status=504)
    if kind == "cut":  # headers and half a body, then the connection goes
      response = web.StreamResponse(headers={"Content-Type": "application/json", "Content-Length": "1000"})
      await response.prepare(request)
      await response.write(b'{"id": "chatcmpl-cut", "choices": [{"mess')
      request.transport.abort()
      return response
    request.transport.abort()  # "drop": no answer at all
    return web.Response()

  async def stats(self, request: web.Request) -> web.Response:
    return web.json_response({"requests": {str(k): v for k, v in self.requests.items()},
                              "answered": {str(k): v for k, v in self.answered.items()},
                              "faulted": dict(self.faulted)})

  def app(self) -> web.Application:
    app = web.Application(client_max_size=64 << 20)
    app.router.add_post("/v1/chat/completions", self.chat)
    app.router.add_get("/stats", self.stats)
    return app

  # ------------------------------------------------------------------------------- serving

  async def _serve(self, port: int = 0) -> web.AppRunner:
    runner = web.AppRunner(self.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    self.url = f"http://127.0.0.1:{port}/v1"
    return runner

  def start(self) -> str:
    """Serves from a thread of this process; returns the base URL."""
    ready = threading.Event()

    def serve():
      self._loop = asyncio.new_event_loop()
      self._runner = self._loop.run_until_complete(self._serve())
      ready.set()
      self._loop.run_forever()
      self._loop.run_until_complete(self._runner.cleanup())
      self._loop.close()
    self._thread = threading.Thread(target=serve, daemon=True)
    self._thread.start()
    ready.wait(10)
    return self.url

  def stop(self) -> None:
    self._loop.call_soon_threadsafe(self._loop.stop)
    self._thread.join(10)


def main() -> None:
  p = argparse.ArgumentParser()
  p.add_argument("--faults", default="{}", help="Faults fields as JSON")
  p.add_argument("--port", type=int, default=0)
  args = p.parse_args()
  server = ChatServer(Faults(**json.loads(args.faults)))

  async def serve():
    await server._serve(args.port)
    print(server.url, flush=True)
    await asyncio.Event().wait()
  asyncio.run(serve())


if __name__ == "__main__":
  sys.exit(main())
