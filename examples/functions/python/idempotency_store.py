"""Deduplication on the `Idempotency-Key` header.

grantbridge sends the action id as `Idempotency-Key` and keeps it on every retry,
so a grant retried after a timeout (the first attempt may have worked) or an
action delivered twice must not run twice. The function claims the key before
it changes anything, stores the answer afterwards, and answers a repeat with the
stored answer.

A claim is one of:

- NEW: first time this key is seen; run the action, then `complete()` (or
  `release()` if it blew up, so a retry runs it again);
- REPLAY: already done; answer with the stored answer, do nothing;
- IN_PROGRESS: another request with this key is running right now (a retry
  that overtook a slow first attempt); answer 429 + Retry-After so the caller
  comes back for the stored answer;
- MISMATCH: the key was used for a different request; answer 422.

Two stores:

- `InMemoryIdempotencyStore` (default): per instance, forgotten on restart.
  Cloud Functions may run several instances and recycle them at any time, so
  this catches retries that land on the same warm instance, no more. Fine for
  trying things out and for idempotent backends; not a guarantee.
- `FirestoreIdempotencyStore` (`IDEMPOTENCY_STORE=firestore`): shared by every
  instance, survives restarts; what production should use. Needs
  `google-cloud-firestore` in requirements.txt and a TTL policy on
  `expires_at` so old keys are deleted (see README.md).
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Optional, Protocol

NEW = "new"
REPLAY = "replay"
IN_PROGRESS = "in_progress"
MISMATCH = "mismatch"

# How long an answer is remembered. Longer than grantbridge retries one action.
DEFAULT_TTL_SECONDS = 24 * 3600
# How long a claim without an answer blocks the key: longer than the function's
# timeout, so a crashed attempt does not block its key for ever.
DEFAULT_CLAIM_SECONDS = 120


@dataclass(frozen=True)
class Answer:
    """What the function answered: HTTP status and JSON body."""

    status: int
    body: dict


@dataclass(frozen=True)
class Claim:
    outcome: str
    answer: Optional[Answer] = None


def fingerprint(event_type: str, params: dict) -> str:
    """A digest of the request, to notice a key reused for something else."""
    canonical = json.dumps(
        {"event_type": event_type, "params": params},
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class IdempotencyStore(Protocol):
    name: str

    def claim(self, key: str, fingerprint: str) -> Claim: ...

    def complete(self, key: str, answer: Answer) -> None: ...

    def release(self, key: str) -> None: ...


@dataclass
class _Entry:
    fingerprint: str
    expires_at: float
    answer: Optional[Answer]


class InMemoryIdempotencyStore:
    """Keys in a dict with a TTL, bounded in size. Thread-safe."""

    name = "memory"

    def __init__(
        self,
        ttl_seconds: float = DEFAULT_TTL_SECONDS,
        claim_seconds: float = DEFAULT_CLAIM_SECONDS,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ttl = ttl_seconds
        self._claim = claim_seconds
        self._max = max_entries
        self._clock = clock
        self._entries: "OrderedDict[str, _Entry]" = OrderedDict()
        self._lock = threading.Lock()

    def claim(self, key: str, fingerprint: str) -> Claim:
        with self._lock:
            now = self._clock()
            self._evict(now)
            entry = self._entries.get(key)
            if entry is not None:
                if entry.fingerprint != fingerprint:
                    return Claim(MISMATCH)
                if entry.answer is not None:
                    return Claim(REPLAY, entry.answer)
                return Claim(IN_PROGRESS)
            self._entries[key] = _Entry(fingerprint, now + self._claim, None)
            while len(self._entries) > self._max:
                self._entries.popitem(last=False)  # the oldest key goes first
            return Claim(NEW)

    def complete(self, key: str, answer: Answer) -> None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                entry.answer = answer
                entry.expires_at = self._clock() + self._ttl

    def release(self, key: str) -> None:
        with self._lock:
            self._entries.pop(key, None)

    def __len__(self) -> int:
        with self._lock:
            self._evict(self._clock())
            return len(self._entries)

    def _evict(self, now: float) -> None:
        expired = [k for k, e in self._entries.items() if e.expires_at <= now]
        for k in expired:
            del self._entries[k]


class FirestoreIdempotencyStore:
    """Keys in a Firestore collection, claimed in a transaction, so every
    instance of the function sees them.

    One document per key (id: SHA-256 of the key), fields `fingerprint`,
    `expires_at` and `answer` (`{"status", "body"}` with the body as JSON text,
    or null while the first attempt runs). Enable a TTL policy on `expires_at`
    so Firestore deletes old keys; until it does, expired documents are simply
    overwritten.

    Only store answers that carry no credentials: this example never does
    (create-/reset-credentials are not implemented).
    """

    name = "firestore"

    def __init__(
        self,
        collection: str = "grantbridge-idempotency",
        ttl_seconds: float = DEFAULT_TTL_SECONDS,
        claim_seconds: float = DEFAULT_CLAIM_SECONDS,
        client: Any = None,
        firestore_module: Any = None,
    ) -> None:
        if firestore_module is None:
            # Optional dependency: only needed when this store is chosen.
            from google.cloud import firestore as firestore_module  # type: ignore
        self._firestore = firestore_module
        self._client = client if client is not None else firestore_module.Client()
        self._collection = self._client.collection(collection)
        self._ttl = timedelta(seconds=ttl_seconds)
        self._claim = timedelta(seconds=claim_seconds)

    def _doc(self, key: str):
        return self._collection.document(hashlib.sha256(key.encode("utf-8")).hexdigest())

    def claim(self, key: str, fingerprint: str) -> Claim:
        doc = self._doc(key)

        @self._firestore.transactional
        def claim_in(transaction) -> Claim:
            snapshot = doc.get(transaction=transaction)
            now = datetime.now(timezone.utc)
            data = snapshot.to_dict() if snapshot.exists else None
            if data and data["expires_at"] > now:
                if data["fingerprint"] != fingerprint:
                    return Claim(MISMATCH)
                stored = data.get("answer")
                if stored is not None:
                    return Claim(REPLAY, Answer(stored["status"], json.loads(stored["body"])))
                return Claim(IN_PROGRESS)
            transaction.set(
                doc,
                {"fingerprint": fingerprint, "expires_at": now + self._claim, "answer": None},
            )
            return Claim(NEW)

        return claim_in(self._client.transaction())

    def complete(self, key: str, answer: Answer) -> None:
        self._doc(key).update(
            {
                "answer": {"status": answer.status, "body": json.dumps(answer.body)},
                "expires_at": datetime.now(timezone.utc) + self._ttl,
            }
        )

    def release(self, key: str) -> None:
        self._doc(key).delete()


def store_from_env(env=os.environ) -> IdempotencyStore:
    """`IDEMPOTENCY_STORE=memory` (default) or `firestore`;
    `IDEMPOTENCY_TTL_SECONDS` (default one day);
    `IDEMPOTENCY_COLLECTION` (Firestore collection, default grantbridge-idempotency)."""
    kind = env.get("IDEMPOTENCY_STORE", "memory")
    ttl = float(env.get("IDEMPOTENCY_TTL_SECONDS", DEFAULT_TTL_SECONDS))
    if kind == "memory":
        return InMemoryIdempotencyStore(ttl_seconds=ttl)
    if kind == "firestore":
        return FirestoreIdempotencyStore(
            collection=env.get("IDEMPOTENCY_COLLECTION", "grantbridge-idempotency"),
            ttl_seconds=ttl,
        )
    raise ValueError(f"IDEMPOTENCY_STORE must be 'memory' or 'firestore', not {kind!r}")
