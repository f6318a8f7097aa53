"""A straightforward connector in Python: what a competent engineer writes in
an afternoon with google-auth and requests, and what grantbridge is measured
against (benches/throughput.rs runs it in the same run, on the same sandbox,
at the same load).

It long-polls the control plane for leases (docs/protocol.md section 3),
calls each action's function with a Google-signed ID token of a service
account key (google-auth's IDTokenCredentials, one per audience, refreshed
when expired), with a pool of worker threads, and reports the results in
batches. It keeps nothing on disk: a crash loses whatever it was doing
(grantbridge journals every action and result; this does less, not more).

argv: --control-plane URL --connector-id ID --token T --key-file PATH
      --integrations '{"name": "function url", ...}' --workers N --instance-id ID
"""
import argparse
import concurrent.futures
import datetime
import json
import queue
import signal
import threading
import time

import google.auth.transport.requests
import requests
from google.oauth2 import service_account


def now():
    return datetime.datetime.now(datetime.timezone.utc).isoformat().replace("+00:00", "Z")


class Tokens:
    """One ID-token credential per audience, refreshed when it expires."""

    def __init__(self, key_file):
        self.key_file = key_file
        self.creds = {}
        self.lock = threading.Lock()
        self.request = google.auth.transport.requests.Request()

    def get(self, audience):
        with self.lock:
            c = self.creds.get(audience)
            if c is None:
                c = service_account.IDTokenCredentials.from_service_account_file(
                    self.key_file, target_audience=audience)
                self.creds[audience] = c
            if not c.valid:
                c.refresh(self.request)
            return c.token


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--control-plane", required=True)
    p.add_argument("--connector-id", required=True)
    p.add_argument("--token", required=True)
    p.add_argument("--key-file", required=True)
    p.add_argument("--integrations", required=True)
    p.add_argument("--workers", type=int, default=32)
    p.add_argument("--instance-id", default="python-peer/0")
    a = p.parse_args()
    integrations = json.loads(a.integrations)
    base = f"{a.control_plane.rstrip('/')}/v1/connectors/{a.connector_id}"
    cp = requests.Session()
    cp.headers["Authorization"] = f"Bearer {a.token}"
    functions = requests.Session()
    adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=a.workers)
    functions.mount("http://", adapter)
    functions.mount("https://", adapter)
    tokens = Tokens(a.key_file)
    results = queue.Queue()
    stop = threading.Event()
    room = threading.Semaphore(2 * a.workers)  # leased and not yet reported
    signal.signal(signal.SIGTERM, lambda *_: stop.set())

    def run(action):
        started = now()
        url = integrations.get(action.get("integration"))
        result = {"action_id": action["id"], "attempts": 1, "started_at": started,
                  "instance_id": a.instance_id, "connector_version": "peer",
                  "lease_token": action["lease"]["token"]}
        if url is None:
            result.update(outcome="failed", function=None, attempts=0,
                          error={"code": "unknown_integration", "message": "not configured",
                                 "retryable": False})
        else:
            t0 = time.monotonic()
            try:
                r = functions.post(url, json={"event_type": action["event_type"],
                                              "params": action.get("params") or {}},
                                   headers={"Authorization": f"Bearer {tokens.get(url)}",
                                            "Idempotency-Key": action["id"]}, timeout=60)
                body = r.json() if r.headers.get("content-type", "").startswith("application/json") else r.text
                ok = 200 <= r.status_code < 300
                result.update(
                    outcome="succeeded" if ok else "failed",
                    error=None if ok else {"code": "function_error",
                                           "message": f"HTTP {r.status_code}", "retryable": False},
                    function={"url": url, "status": r.status_code, "body": body,
                              "latency_ms": int((time.monotonic() - t0) * 1000)})
            except requests.RequestException as e:
                result.update(outcome="failed", function={"url": url, "status": None, "body": None,
                                                          "latency_ms": 0},
                              error={"code": "function_unavailable", "message": str(e),
                                     "retryable": True})
        result["finished_at"] = now()
        results.put(result)

    def report():
        while not (stop.is_set() and results.empty()):
            try:
                batch = [results.get(timeout=0.5)]
            except queue.Empty:
                continue
            while len(batch) < 500:
                try:
                    batch.append(results.get_nowait())
                except queue.Empty:
                    break
            while True:
                try:
                    r = cp.post(f"{base}/results", json={"results": batch}, timeout=30)
                    if r.ok:
                        break
                except requests.RequestException:
                    pass
                time.sleep(1)
            for _ in batch:
                room.release()

    reporter = threading.Thread(target=report, daemon=True)
    reporter.start()
    with concurrent.futures.ThreadPoolExecutor(max_workers=a.workers) as pool:
        while not stop.is_set():
            room.acquire()
            free = 1
            while free < 2 * a.workers and room.acquire(blocking=False):
                free += 1
            try:
                r = cp.post(f"{base}/lease", json={"instance_id": a.instance_id, "max_actions": free,
                                                   "wait_seconds": 20, "lease_seconds": 60}, timeout=50)
                r.raise_for_status()
                actions = r.json().get("actions", [])
            except requests.RequestException:
                actions = []
                time.sleep(1)
            for action in actions:
                pool.submit(run, action)
            for _ in range(free - len(actions)):
                room.release()
    reporter.join(timeout=30)


main()
