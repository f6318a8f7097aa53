// Tests of the example function through functions-framework's own server
// (getTestServer: what Cloud Functions runs), over plain HTTP.
//
//   node --test examples/functions/node      (after npm ci in that folder)
'use strict';

const assert = require('node:assert/strict');
const {after, before, beforeEach, describe, it, mock} = require('node:test');
const {getTestServer} = require('@google-cloud/functions-framework/testing');

const {deps} = require('..');
const {InMemoryBackend} = require('../backend');
const {
  IN_PROGRESS,
  MISMATCH,
  NEW,
  REPLAY,
  FirestoreIdempotencyStore,
  InMemoryIdempotencyStore,
  fingerprint,
  storeFromEnv,
} = require('../idempotency');

const TRACEPARENT = '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01';
const BEARER = 'Bearer eyJhbGciOiJSUzI1NiJ9.secret-token-material.sig';

let server;
let base;
let logs;

before(async () => {
  server = getTestServer('handle');
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  base = `http://127.0.0.1:${server.address().port}/`;
});

after(() => new Promise((resolve) => server.close(resolve)));

beforeEach(() => {
  // A fresh instance: empty backend and idempotency store, logs captured.
  deps.backend = new InMemoryBackend();
  deps.idempotency = new InMemoryIdempotencyStore();
  deps.project = '';
  logs = [];
  mock.restoreAll();
  mock.method(console, 'log', (line) => logs.push(line));
});

function access(eventType = 'grant-access', {resources = ['orders'], permission = 'read', ...extra} = {}) {
  return {
    event_type: eventType,
    params: {
      grant_id: 'g-1',
      username: 'alice@example.com',
      resource_type: 'db',
      resources,
      permission,
      custom_parameters: {role_prefix: 'app_'},
      ...extra,
    },
  };
}

async function call(body, key, headers = {}) {
  const h = {'content-type': 'application/json', traceparent: TRACEPARENT, authorization: BEARER, ...headers};
  if (key !== undefined) h['idempotency-key'] = key;
  const resp = await fetch(base, {method: 'POST', headers: h, body: typeof body === 'string' ? body : JSON.stringify(body)});
  const text = await resp.text();
  let json;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return {status: resp.status, headers: resp.headers, body: json, text};
}

async function grants() {
  return (await call({event_type: 'get-status'})).body.grants;
}

describe('the contract', () => {
  it('answers get-status', async () => {
    const r = await call({event_type: 'get-status', params: {custom_parameters: {}}});
    assert.equal(r.status, 200);
    assert.deepEqual(r.body, {status: 'ok', backend: 'in-memory', idempotency_store: 'memory', grants: 0, replayed: false});
  });

  it('lists resources and permissions', async () => {
    const r = await call({event_type: 'list-resources', params: {resource_type: 'db'}}, 'act-l');
    assert.equal(r.status, 200);
    assert.deepEqual(r.body.resources.map((x) => x.id), ['customers', 'orders', 'payments']);
    for (const x of r.body.resources) {
      assert.deepEqual(Object.keys(x).sort(), ['id', 'metadata', 'name', 'type']);
      assert.equal(x.type, 'db');
    }
    assert.deepEqual(r.body.permissions[0], {id: 'read', name: 'Read only'});
    assert.equal('status' in r.body, false, 'a list answer is the lists, nothing else');
  });

  it('grants, then revokes, and says what changed', async () => {
    const grant = await call(access(), 'act-1');
    assert.deepEqual(grant.body, {
      status: 'ok',
      grant_id: 'g-1',
      changes: [{resource: 'orders', role: 'app_orders_read', changed: true}],
      replayed: false,
    });
    assert.equal(await grants(), 1);
    const revoke = await call(access('revoke-access'), 'act-2');
    assert.deepEqual([revoke.body.status, revoke.body.changes[0].changed], ['ok', true]);
    assert.equal(await grants(), 0);
    // Revoking what is not granted is done already: ok, nothing changed.
    const again = await call(access('revoke-access'), 'act-3');
    assert.deepEqual([again.body.status, again.body.changes[0].changed], ['ok', false]);
  });

  it('names roles with the role_prefix from custom_parameters', async () => {
    const body = access('grant-access', {resources: ['orders', 'payments'], permission: 'write'});
    body.params.custom_parameters = {role_prefix: 'prod_'};
    const r = await call(body, 'act-p');
    assert.deepEqual(r.body.changes.map((c) => c.role), ['prod_orders_write', 'prod_payments_write']);
  });

  it('answers business failures with status error and changes nothing', async () => {
    let r = await call(access('grant-access', {resources: ['orders', 'nope']}), 'act-b1');
    assert.equal(r.status, 200);
    assert.equal(r.body.status, 'error');
    assert.match(r.body.message, /unknown db resource\(s\): nope/);
    assert.equal(await grants(), 0, 'all or nothing: orders was not granted either');
    r = await call(access('grant-access', {permission: 'superuser'}), 'act-b2');
    assert.match(r.body.message, /unknown permission 'superuser'/);
    r = await call({event_type: 'list-resources', params: {resource_type: 'bucket'}});
    assert.equal(r.body.status, 'error');
    assert.match(r.body.message, /unknown resource_type 'bucket'/);
  });

  it('answers bad requests with 400 and a message', async () => {
    const cases = [
      [[1, 2], /JSON object/],
      [{event_type: 'create-credentials', params: {}}, /unsupported event_type "create-credentials"/],
      [{params: {}}, /unsupported event_type null/],
      [{event_type: 'list-resources', params: {}}, /params.resource_type is required/],
      [{event_type: 'grant-access', params: 'x'}, /params must be a JSON object/],
      [access('grant-access', {resources: []}), /params.resources: a non-empty array/],
      [access('grant-access', {grant_id: ''}), /params.grant_id is required/],
      [access('grant-access', {custom_parameters: {role_prefix: 'x; DROP ROLE'}}), /role_prefix/],
    ];
    for (const [body, message] of cases) {
      const r = await call(body, 'act-bad');
      assert.equal(r.status, 400, JSON.stringify(body));
      assert.equal(r.body.status, 'error');
      assert.match(r.body.message, message);
    }
    // Not JSON at all: the framework's body parser answers 400 itself.
    assert.equal((await call('not json', 'act-bad')).status, 400);
    assert.equal((await call(access(), 'k'.repeat(256))).status, 400);
    assert.equal(await grants(), 0);
  });
});

describe('Idempotency-Key', () => {
  it('answers a repeated key with the first answer without running again', async () => {
    const first = await call(access(), 'act-7');
    await call(access('revoke-access'), 'act-8'); // the grant is gone now
    const again = await call(access(), 'act-7');
    assert.equal(again.status, 200);
    assert.equal(again.headers.get('idempotent-replayed'), 'true');
    assert.equal(first.headers.get('idempotent-replayed'), null);
    assert.deepEqual(again.body, {...first.body, replayed: true});
    assert.equal(await grants(), 0, 'the replay did not grant again');
  });

  it('replays business failures too', async () => {
    await call(access('grant-access', {resources: ['nope']}), 'act-f');
    deps.backend.catalog.db.nope = {}; // now it would succeed
    const again = await call(access('grant-access', {resources: ['nope']}), 'act-f');
    assert.deepEqual([again.body.status, again.body.replayed], ['error', true]);
  });

  it('answers 422 to a key reused for another request', async () => {
    await call(access(), 'act-9');
    const r = await call(access('grant-access', {permission: 'write'}), 'act-9');
    assert.equal(r.status, 422);
    assert.match(r.body.message, /different request/);
  });

  it('answers 429 with Retry-After while the key is still running', async () => {
    // Another request with this key is being served right now.
    await deps.idempotency.claim('act-slow', fingerprint('grant-access', access().params));
    const r = await call(access(), 'act-slow');
    assert.equal(r.status, 429);
    assert.equal(r.headers.get('retry-after'), '2');
    assert.equal(await grants(), 0);
  });

  it('answers 500 to an unexpected failure and runs the retry again', async () => {
    const real = deps.backend;
    deps.backend = {
      name: 'down',
      grant: async () => {
        throw new Error('database unreachable');
      },
    };
    const r = await call(access(), 'act-500');
    assert.equal(r.status, 500);
    assert.match(r.body.message, /retry/);
    deps.backend = real;
    const retry = await call(access(), 'act-500');
    assert.deepEqual([retry.status, retry.body.replayed], [200, false]);
    assert.equal(await grants(), 1);
  });

  it('runs every call without a key', async () => {
    await call(access());
    const second = await call(access());
    assert.deepEqual([second.body.replayed, second.body.changes[0].changed], [false, false]);
  });

  it('always runs reads', async () => {
    const body = {event_type: 'list-resources', params: {resource_type: 'db'}};
    await call(body, 'act-r');
    assert.equal((await call(body, 'act-r')).headers.get('idempotent-replayed'), null);
  });
});

describe('logs', () => {
  it('are JSON lines carrying the trace, never the token', async () => {
    deps.project = 'acme-prod';
    await call(access(), 'act-log');
    await call(access(), 'act-log');
    const lines = logs.map((l) => JSON.parse(l));
    assert.equal(lines.length, 2);
    for (const line of lines) {
      assert.equal(line['logging.googleapis.com/trace'], 'projects/acme-prod/traces/0af7651916cd43dd8448eb211c80319c');
      assert.equal(line['logging.googleapis.com/spanId'], 'b7ad6b7169203331');
      assert.equal(line['logging.googleapis.com/trace_sampled'], true);
      assert.deepEqual([line.idempotency_key, line.event_type, line.severity], ['act-log', 'grant-access', 'INFO']);
    }
    assert.deepEqual(lines.map((l) => l.replayed), [false, true]);
    assert.doesNotMatch(logs.join('\n'), /secret-token-material|Bearer/);
  });

  it('ignore a malformed traceparent', async () => {
    await call(access(), 'act-t', {traceparent: 'garbage'});
    const [line] = logs.map((l) => JSON.parse(l));
    assert.equal('trace_id' in line, false);
    assert.equal('logging.googleapis.com/trace' in line, false);
  });
});

describe('InMemoryIdempotencyStore', () => {
  it('claims, completes, replays and forgets after the TTL', async () => {
    let now = 1000;
    const store = new InMemoryIdempotencyStore({ttlMs: 60, claimMs: 10, clock: () => now});
    assert.equal((await store.claim('k', 'f')).outcome, NEW);
    assert.equal((await store.claim('k', 'f')).outcome, IN_PROGRESS);
    assert.equal((await store.claim('k', 'other')).outcome, MISMATCH);
    await store.complete('k', {status: 200, body: {status: 'ok'}});
    assert.deepEqual(await store.claim('k', 'f'), {outcome: REPLAY, answer: {status: 200, body: {status: 'ok'}}});
    now += 59;
    assert.equal((await store.claim('k', 'f')).outcome, REPLAY);
    now += 1;
    assert.equal((await store.claim('k', 'f')).outcome, NEW, 'forgotten after the TTL');
  });

  it('lets an abandoned claim expire', async () => {
    let now = 0;
    const store = new InMemoryIdempotencyStore({claimMs: 10, clock: () => now});
    await store.claim('k', 'f');
    now += 10;
    assert.equal((await store.claim('k', 'f')).outcome, NEW);
  });

  it('forgets released keys and stays bounded', async () => {
    const store = new InMemoryIdempotencyStore({maxEntries: 3});
    for (const k of 'abcd') await store.claim(k, 'f');
    assert.equal(store.size, 3);
    assert.equal((await store.claim('a', 'f')).outcome, NEW, 'the oldest went first');
    await store.release('a');
    assert.equal((await store.claim('a', 'f')).outcome, NEW);
  });

  it('is chosen from the environment', () => {
    assert.equal(storeFromEnv({}).name, 'memory');
    assert.throws(() => storeFromEnv({IDEMPOTENCY_STORE: 'redis'}), /memory' or 'firestore/);
  });
});

/** Just enough of @google-cloud/firestore for FirestoreIdempotencyStore. */
function fakeFirestore() {
  const docs = new Map();
  // Firestore stores Dates and reads them back as Timestamps (with toMillis()).
  const timestamp = (date) => ({toMillis: () => date.getTime()});
  const stored = (fields) =>
    Object.fromEntries(
      Object.entries(fields).map(([k, v]) => [k, v instanceof Date ? timestamp(v) : JSON.parse(JSON.stringify(v))]),
    );
  const ref = (id) => ({
    id,
    get: async () => ({exists: docs.has(id), data: () => ({...docs.get(id)})}),
    update: async (fields) => docs.set(id, {...docs.get(id), ...stored(fields)}),
    delete: async () => docs.delete(id),
  });
  return {
    docs,
    collection: () => ({doc: ref}),
    // The real runTransaction retries on contention.
    runTransaction: async (fn) => fn({get: (r) => r.get(), set: (r, data) => docs.set(r.id, stored(data))}),
  };
}

describe('FirestoreIdempotencyStore', () => {
  it('claims, completes, replays and releases', async () => {
    const db = fakeFirestore();
    const store = new FirestoreIdempotencyStore({db});
    assert.equal((await store.claim('act-1', 'f')).outcome, NEW);
    assert.equal((await store.claim('act-1', 'f')).outcome, IN_PROGRESS);
    assert.equal((await store.claim('act-1', 'g')).outcome, MISMATCH);
    await store.complete('act-1', {status: 200, body: {status: 'ok', changes: []}});
    const [id] = db.docs.keys();
    assert.deepEqual(await store.claim('act-1', 'f'), {outcome: REPLAY, answer: {status: 200, body: {status: 'ok', changes: []}}});
    assert.doesNotMatch(id, /act-1/, 'document ids are digests of the key');
    await store.release('act-1');
    assert.equal((await store.claim('act-1', 'f')).outcome, NEW);
  });

  it('claims an expired document again', async () => {
    const store = new FirestoreIdempotencyStore({db: fakeFirestore(), claimMs: -1});
    await store.claim('k', 'f');
    assert.equal((await store.claim('k', 'f')).outcome, NEW);
  });
});
