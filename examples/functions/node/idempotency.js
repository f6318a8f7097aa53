// Deduplication on the `Idempotency-Key` header.
//
// grantbridge sends the action id as `Idempotency-Key` and keeps it on every
// retry, so a grant retried after a timeout (the first attempt may have worked)
// or an action delivered twice must not run twice. The function claims the key
// before it changes anything, stores the answer afterwards, and answers a
// repeat with the stored answer.
//
// A claim is one of:
// - NEW: first time this key is seen; run the action, then complete() (or
//   release() if it blew up, so a retry runs it again);
// - REPLAY: already done; answer with the stored answer, do nothing;
// - IN_PROGRESS: another request with this key is running right now (a retry
//   that overtook a slow first attempt); answer 429 + Retry-After;
// - MISMATCH: the key was used for a different request; answer 422.
//
// Two stores:
// - InMemoryIdempotencyStore (default): per instance, forgotten on restart.
//   Cloud Functions may run several instances and recycle them at any time, so
//   this catches retries that land on the same warm instance, no more.
// - FirestoreIdempotencyStore (IDEMPOTENCY_STORE=firestore): shared by every
//   instance, survives restarts; what production should use. Needs
//   `npm install @google-cloud/firestore` and a TTL policy on `expires_at`
//   (see README.md).
'use strict';

const crypto = require('node:crypto');

const NEW = 'new';
const REPLAY = 'replay';
const IN_PROGRESS = 'in_progress';
const MISMATCH = 'mismatch';

// How long an answer is remembered: longer than grantbridge retries one action.
const DEFAULT_TTL_MS = 24 * 3600 * 1000;
// How long a claim without an answer blocks its key: longer than the
// function's timeout, so a crashed attempt does not block its key for ever.
const DEFAULT_CLAIM_MS = 120 * 1000;

/** JSON with sorted keys, so equal requests have equal fingerprints. */
function canonical(value) {
  if (Array.isArray(value)) return `[${value.map(canonical).join(',')}]`;
  if (value && typeof value === 'object') {
    const keys = Object.keys(value).sort();
    return `{${keys.map((k) => `${JSON.stringify(k)}:${canonical(value[k])}`).join(',')}}`;
  }
  return JSON.stringify(value);
}

/** A digest of the request, to notice a key reused for something else. */
function fingerprint(eventType, params) {
  return crypto
    .createHash('sha256')
    .update(canonical({event_type: eventType, params}))
    .digest('hex');
}

/** Keys in a Map with a TTL, bounded in size (Node runs one request at a time per event loop turn). */
class InMemoryIdempotencyStore {
  constructor({ttlMs = DEFAULT_TTL_MS, claimMs = DEFAULT_CLAIM_MS, maxEntries = 10000, clock = Date.now} = {}) {
    this.name = 'memory';
    this.ttlMs = ttlMs;
    this.claimMs = claimMs;
    this.maxEntries = maxEntries;
    this.clock = clock;
    this.entries = new Map(); // insertion order: the oldest key first
  }

  async claim(key, print) {
    const now = this.clock();
    this.evict(now);
    const entry = this.entries.get(key);
    if (entry) {
      if (entry.fingerprint !== print) return {outcome: MISMATCH};
      if (entry.answer) return {outcome: REPLAY, answer: entry.answer};
      return {outcome: IN_PROGRESS};
    }
    this.entries.set(key, {fingerprint: print, expiresAt: now + this.claimMs, answer: null});
    while (this.entries.size > this.maxEntries) {
      this.entries.delete(this.entries.keys().next().value);
    }
    return {outcome: NEW};
  }

  async complete(key, answer) {
    const entry = this.entries.get(key);
    if (entry) {
      entry.answer = answer;
      entry.expiresAt = this.clock() + this.ttlMs;
    }
  }

  async release(key) {
    this.entries.delete(key);
  }

  get size() {
    this.evict(this.clock());
    return this.entries.size;
  }

  evict(now) {
    for (const [key, entry] of this.entries) {
      if (entry.expiresAt <= now) this.entries.delete(key);
    }
  }
}

/**
 * Keys in a Firestore collection, claimed in a transaction, so every instance
 * of the function sees them. One document per key (id: SHA-256 of the key),
 * fields `fingerprint`, `expires_at` and `answer` ({status, body} with the body
 * as JSON text, or null while the first attempt runs). Enable a TTL policy on
 * `expires_at`; until Firestore deletes a document it is simply overwritten.
 *
 * Only store answers that carry no credentials: this example never does.
 */
class FirestoreIdempotencyStore {
  constructor({collection = 'grantbridge-idempotency', ttlMs = DEFAULT_TTL_MS, claimMs = DEFAULT_CLAIM_MS, db} = {}) {
    this.name = 'firestore';
    if (!db) {
      // Optional dependency: only needed when this store is chosen.
      const {Firestore} = require('@google-cloud/firestore');
      db = new Firestore();
    }
    this.db = db;
    this.collection = db.collection(collection);
    this.ttlMs = ttlMs;
    this.claimMs = claimMs;
  }

  doc(key) {
    return this.collection.doc(crypto.createHash('sha256').update(key).digest('hex'));
  }

  async claim(key, print) {
    const ref = this.doc(key);
    return this.db.runTransaction(async (t) => {
      const snapshot = await t.get(ref);
      const now = Date.now();
      const data = snapshot.exists ? snapshot.data() : null;
      if (data && data.expires_at.toMillis() > now) {
        if (data.fingerprint !== print) return {outcome: MISMATCH};
        if (data.answer) {
          return {outcome: REPLAY, answer: {status: data.answer.status, body: JSON.parse(data.answer.body)}};
        }
        return {outcome: IN_PROGRESS};
      }
      t.set(ref, {fingerprint: print, expires_at: new Date(now + this.claimMs), answer: null});
      return {outcome: NEW};
    });
  }

  async complete(key, answer) {
    await this.doc(key).update({
      answer: {status: answer.status, body: JSON.stringify(answer.body)},
      expires_at: new Date(Date.now() + this.ttlMs),
    });
  }

  async release(key) {
    await this.doc(key).delete();
  }
}

/**
 * IDEMPOTENCY_STORE=memory (default) or firestore; IDEMPOTENCY_TTL_SECONDS
 * (default one day); IDEMPOTENCY_COLLECTION (default grantbridge-idempotency).
 */
function storeFromEnv(env = process.env) {
  const kind = env.IDEMPOTENCY_STORE || 'memory';
  const ttlMs = env.IDEMPOTENCY_TTL_SECONDS ? Number(env.IDEMPOTENCY_TTL_SECONDS) * 1000 : DEFAULT_TTL_MS;
  if (kind === 'memory') return new InMemoryIdempotencyStore({ttlMs});
  if (kind === 'firestore') {
    return new FirestoreIdempotencyStore({collection: env.IDEMPOTENCY_COLLECTION || undefined, ttlMs});
  }
  throw new Error(`IDEMPOTENCY_STORE must be 'memory' or 'firestore', not '${kind}'`);
}

module.exports = {
  NEW,
  REPLAY,
  IN_PROGRESS,
  MISMATCH,
  fingerprint,
  InMemoryIdempotencyStore,
  FirestoreIdempotencyStore,
  storeFromEnv,
};
