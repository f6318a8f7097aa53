// Where access is actually granted: the part you replace.
//
// InMemoryBackend stands in for a real system (a database where grants are SQL
// `GRANT role TO user`, a SaaS admin API, ...). It keeps a catalog of databases
// and the roles granted on them, so a revoke after a grant is observable. Write
// your own class with the same four methods and use it in index.js.
//
// Rules a real backend should keep, as this one does:
// - grant and revoke are idempotent ("make it so"): granting what is already
//   granted, or revoking what is not, succeeds and says `changed: false`;
// - a request that cannot be done (unknown resource or permission) throws
//   BusinessError *before* changing anything: the caller gets
//   {"status": "error", "message": ...} and does not retry;
// - anything else that goes wrong (database down) throws any other error: the
//   caller gets a 500 and retries with the same Idempotency-Key.
'use strict';

/** The request is understood but cannot be done; not worth retrying. */
class BusinessError extends Error {}

/**
 * Roles are named `<role_prefix><resource>_<permission>`, the prefix coming
 * from the integration's custom_parameters.
 */
function roleName(request, resource) {
  return `${request.rolePrefix}${resource}_${request.permission}`;
}

class InMemoryBackend {
  constructor() {
    this.name = 'in-memory';
    this.catalog = {
      db: {
        orders: {engine: 'postgres', location: 'us-central1'},
        payments: {engine: 'postgres', location: 'us-central1'},
        customers: {engine: 'mysql', location: 'europe-west1'},
      },
    };
    this.permissions = {read: 'Read only', write: 'Read and write', admin: 'Owner'};
    // JSON [username, resource_type, resource, permission] -> {role, grantId}
    this.grants = new Map();
  }

  async status() {
    return {grants: this.grants.size};
  }

  async listResources(resourceType) {
    const catalog = this.catalogOf(resourceType);
    return {
      resources: Object.keys(catalog)
        .sort()
        .map((name) => ({id: name, name, type: resourceType, metadata: {...catalog[name]}})),
      permissions: Object.entries(this.permissions).map(([id, name]) => ({id, name})),
    };
  }

  async grant(request) {
    this.check(request);
    return request.resources.map((resource) => {
      const key = grantKey(request, resource);
      const changed = !this.grants.has(key);
      if (changed) this.grants.set(key, {role: roleName(request, resource), grantId: request.grantId});
      return {resource, role: roleName(request, resource), changed};
    });
  }

  async revoke(request) {
    this.check(request);
    return request.resources.map((resource) => ({
      resource,
      role: roleName(request, resource),
      changed: this.grants.delete(grantKey(request, resource)),
    }));
  }

  catalogOf(resourceType) {
    if (!Object.hasOwn(this.catalog, resourceType)) {
      const known = Object.keys(this.catalog).sort().join(', ');
      throw new BusinessError(`unknown resource_type '${resourceType}'; this function manages: ${known}`);
    }
    return this.catalog[resourceType];
  }

  /** Everything is checked before anything changes: all or nothing. */
  check(request) {
    const catalog = this.catalogOf(request.resourceType);
    const unknown = request.resources.filter((r) => !Object.hasOwn(catalog, r));
    if (unknown.length) {
      throw new BusinessError(`unknown ${request.resourceType} resource(s): ${unknown.join(', ')}`);
    }
    if (!Object.hasOwn(this.permissions, request.permission)) {
      const known = Object.keys(this.permissions).join(', ');
      throw new BusinessError(`unknown permission '${request.permission}'; expected one of: ${known}`);
    }
  }
}

function grantKey(request, resource) {
  return JSON.stringify([request.username, request.resourceType, resource, request.permission]);
}

module.exports = {BusinessError, InMemoryBackend};
