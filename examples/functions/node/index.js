// A grantbridge (and Apono custom-integration) function for Cloud Functions,
// Node.js, served by Google's functions-framework.
//
// One HTTP entry point, `handle`, dispatches on the body's `event_type`:
//
//   POST /  {"event_type": "grant-access",
//            "params": {"grant_id", "username", "resource_type", "resources": [...],
//                       "permission", "custom_parameters": {"role_prefix": "..."}}}
//
// - get-status      -> 200 {"status": "ok", "backend": ..., ...}
// - list-resources  -> 200 {"resources": [{"id", "name", "type", "metadata"}],
//                           "permissions": [{"id", "name"}]}
// - grant-access    -> 200 {"status": "ok", "grant_id", "changes": [...], "replayed": false}
// - revoke-access   -> the same
// - a request the backend cannot do (unknown resource, ...)
//                   -> 200 {"status": "error", "message": ...}   (not retried)
// - a malformed request or another event type
//                   -> 400 {"status": "error", "message": ...}   (not retried)
// - an unexpected failure
//                   -> 500 {"status": "error", "message": ...}   (retried, same key)
//
// grant-access and revoke-access change things, so they are deduplicated on the
// `Idempotency-Key` header (the grantbridge action id, kept across retries): a
// repeat gets the first answer with "replayed": true and the backend is not
// called again. The reads (get-status, list-resources) always run.
//
// Logs are JSON lines on stdout, which Cloud Logging parses: `severity`,
// `message`, and `logging.googleapis.com/trace` from the `traceparent` header,
// so the function's lines sit under the same trace as grantbridge's.
// Credentials and the Authorization header are never logged.
'use strict';

const functions = require('@google-cloud/functions-framework');

const {BusinessError, InMemoryBackend} = require('./backend');
const {IN_PROGRESS, MISMATCH, REPLAY, fingerprint, storeFromEnv} = require('./idempotency');

// Built once per instance, reused by every request it serves; tests swap them.
const deps = {
  backend: new InMemoryBackend(),
  idempotency: storeFromEnv(),
  // Cloud Logging links a line to a trace by "projects/<project>/traces/<id>".
  // Deploy with --set-env-vars=GOOGLE_CLOUD_PROJECT=<project> (newer runtimes
  // do not set it for you); without it lines still carry the bare trace id.
  project: process.env.GOOGLE_CLOUD_PROJECT || process.env.GCP_PROJECT || '',
};

const MUTATIONS = ['grant-access', 'revoke-access'];
const READS = ['get-status', 'list-resources'];
const TRACEPARENT = /^[0-9a-f]{2}-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/;
const ROLE_PREFIX = /^[a-z0-9_]{0,32}$/;
const MAX_KEY_LENGTH = 255;

/** Answered 400: the caller sent something this function does not accept. */
class BadRequest extends Error {}

functions.http('handle', async (req, res) => {
  const key = req.get('Idempotency-Key');
  const log = new RequestLog(req.get('traceparent'), key);
  let eventType;
  let params;
  try {
    ({eventType, params} = parse(req));
    if (key !== undefined && !(key.length > 0 && key.length <= MAX_KEY_LENGTH)) {
      throw new BadRequest(`Idempotency-Key must be 1..${MAX_KEY_LENGTH} characters`);
    }
  } catch (e) {
    if (!(e instanceof BadRequest)) throw e;
    log.write('WARNING', 'bad request', {reason: e.message});
    return reply(res, {status: 400, body: {status: 'error', message: e.message}});
  }
  log.event(eventType, params);

  if (READS.includes(eventType) || key === undefined) {
    const answer = await run(eventType, params, log);
    log.write(answer.status < 500 ? 'INFO' : 'ERROR', `${eventType} answered`, {
      http_status: answer.status,
      outcome: answer.body.status ?? 'ok',
    });
    return reply(res, answer);
  }

  const claim = await deps.idempotency.claim(key, fingerprint(eventType, params));
  if (claim.outcome === REPLAY) {
    log.write('INFO', `${eventType} replayed: already done under this Idempotency-Key`, {
      http_status: claim.answer.status,
      replayed: true,
    });
    return reply(res, claim.answer, {replayed: true});
  }
  if (claim.outcome === IN_PROGRESS) {
    log.write('WARNING', `${eventType} already running under this Idempotency-Key`);
    const message = 'a request with this Idempotency-Key is still running; retry shortly';
    return reply(res, {status: 429, body: {status: 'error', message}}, {headers: {'Retry-After': '2'}});
  }
  if (claim.outcome === MISMATCH) {
    log.write('WARNING', 'Idempotency-Key reused for a different request');
    const message = 'this Idempotency-Key was used for a different request';
    return reply(res, {status: 422, body: {status: 'error', message}});
  }

  const answer = await run(eventType, params, log);
  if (answer.status >= 500) {
    await deps.idempotency.release(key); // not done: a retry with this key runs it again
  } else {
    await deps.idempotency.complete(key, answer);
  }
  log.write(answer.status < 500 ? 'INFO' : 'ERROR', `${eventType} answered`, {
    http_status: answer.status,
    outcome: answer.body.status,
    replayed: false,
  });
  return reply(res, answer);
});

/** Calls the backend; maps its errors onto the contract's answers. */
async function run(eventType, params, log) {
  const {backend} = deps;
  try {
    if (eventType === 'get-status') {
      const status = await backend.status();
      return {status: 200, body: {status: 'ok', backend: backend.name, idempotency_store: deps.idempotency.name, ...status}};
    }
    if (eventType === 'list-resources') {
      return {status: 200, body: await backend.listResources(params.resource_type)};
    }
    const request = accessRequest(params);
    const changes = eventType === 'grant-access' ? await backend.grant(request) : await backend.revoke(request);
    return {status: 200, body: {status: 'ok', grant_id: request.grantId, changes}};
  } catch (e) {
    if (e instanceof BusinessError) return {status: 200, body: {status: 'error', message: e.message}};
    // The backend failed: tell the caller to retry.
    log.write('ERROR', `${eventType} failed`, {error: `${e.name}: ${e.message}`});
    return {status: 500, body: {status: 'error', message: `${eventType} failed; retry later`}};
  }
}

/** The body as {eventType, params}, or BadRequest saying what is wrong. */
function parse(req) {
  const payload = req.body;
  if (!isObject(payload)) throw new BadRequest('the body must be a JSON object {"event_type", "params"}');
  const eventType = payload.event_type;
  const params = payload.params ?? {};
  if (!isObject(params)) throw new BadRequest('params must be a JSON object');
  if (eventType === 'list-resources') {
    requireString(params, 'resource_type');
  } else if (MUTATIONS.includes(eventType)) {
    for (const name of ['grant_id', 'username', 'resource_type', 'permission']) requireString(params, name);
    const {resources} = params;
    if (!Array.isArray(resources) || !resources.length || !resources.every((r) => typeof r === 'string' && r)) {
      throw new BadRequest(`${eventType} requires params.resources: a non-empty array of strings`);
    }
  } else if (eventType !== 'get-status') {
    throw new BadRequest(
      `unsupported event_type ${JSON.stringify(eventType ?? null)}; this function handles ${[...READS, ...MUTATIONS].join(', ')}`,
    );
  }
  const custom = params.custom_parameters ?? {};
  if (!isObject(custom)) throw new BadRequest('params.custom_parameters must be a JSON object');
  const prefix = custom.role_prefix ?? '';
  if (typeof prefix !== 'string' || !ROLE_PREFIX.test(prefix)) {
    throw new BadRequest('custom_parameters.role_prefix must be up to 32 of [a-z0-9_]');
  }
  return {eventType, params};
}

function isObject(value) {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}

function requireString(params, name) {
  if (typeof params[name] !== 'string' || !params[name]) {
    throw new BadRequest(`params.${name} is required: a non-empty string`);
  }
}

function accessRequest(params) {
  return {
    grantId: params.grant_id,
    username: params.username,
    resourceType: params.resource_type,
    resources: params.resources,
    permission: params.permission,
    rolePrefix: params.custom_parameters?.role_prefix ?? '',
  };
}

function reply(res, answer, {replayed = false, headers = {}} = {}) {
  const body = {...answer.body};
  if (answer.status < 300 && 'status' in body) body.replayed = replayed; // grant/revoke answers, not lists
  if (replayed) res.set('Idempotent-Replayed', 'true');
  res.set(headers);
  res.status(answer.status).json(body);
}

/** One JSON line per write(), correlated by the W3C trace id. */
class RequestLog {
  constructor(traceparent, idempotencyKey) {
    this.fields = {};
    const match = TRACEPARENT.exec((traceparent ?? '').trim().toLowerCase());
    if (match && !/^0+$/.test(match[1])) {
      const [, traceId, spanId, flags] = match;
      this.fields.trace_id = traceId;
      if (deps.project) this.fields['logging.googleapis.com/trace'] = `projects/${deps.project}/traces/${traceId}`;
      this.fields['logging.googleapis.com/spanId'] = spanId;
      this.fields['logging.googleapis.com/trace_sampled'] = (parseInt(flags, 16) & 1) === 1;
    }
    if (idempotencyKey) this.fields.idempotency_key = idempotencyKey.slice(0, MAX_KEY_LENGTH);
  }

  /** Remembers what the request is about; never the whole params. */
  event(eventType, params) {
    this.fields.event_type = eventType;
    for (const name of ['grant_id', 'username', 'resource_type', 'resources', 'permission']) {
      if (name in params) this.fields[name] = params[name];
    }
  }

  write(severity, message, fields = {}) {
    console.log(JSON.stringify({severity, message, ...this.fields, ...fields}));
  }
}

module.exports = {deps};
