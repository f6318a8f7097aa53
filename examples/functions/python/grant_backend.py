"""Where access is actually granted: the part you replace.

`InMemoryBackend` stands in for a real system (a database where grants are SQL
`GRANT role TO user`, a SaaS admin API, ...). It keeps a catalog of databases
and the roles granted on them, so a revoke after a grant is observable. Write
your own class with the same four methods and pass it to `main.py`.

Rules a real backend should keep, as this one does:

- grant and revoke are idempotent ("make it so"): granting what is already
  granted, or revoking what is not, succeeds and says `changed: false`;
- a request that cannot be done (unknown resource or permission) raises
  `BusinessError` *before* changing anything: the caller gets
  `{"status": "error", "message": ...}` and does not retry;
- anything else that goes wrong (database down) raises any other exception:
  the caller gets a 500 and retries with the same Idempotency-Key.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Protocol


class BusinessError(Exception):
    """The request is understood but cannot be done; not worth retrying."""


@dataclass(frozen=True)
class AccessRequest:
    grant_id: str
    username: str
    resource_type: str
    resources: tuple
    permission: str
    # From the integration's custom_parameters: roles are named
    # "<role_prefix><resource>_<permission>", e.g. "orders_app_orders_read".
    role_prefix: str = ""

    def role(self, resource: str) -> str:
        return f"{self.role_prefix}{resource}_{self.permission}"


class Backend(Protocol):
    name: str

    def status(self) -> dict: ...

    def list_resources(self, resource_type: str) -> dict: ...

    def grant(self, request: AccessRequest) -> list: ...

    def revoke(self, request: AccessRequest) -> list: ...


class InMemoryBackend:
    name = "in-memory"

    CATALOG = {
        "db": {
            "orders": {"engine": "postgres", "location": "us-central1"},
            "payments": {"engine": "postgres", "location": "us-central1"},
            "customers": {"engine": "mysql", "location": "europe-west1"},
        }
    }
    PERMISSIONS = {"read": "Read only", "write": "Read and write", "admin": "Owner"}

    def __init__(self) -> None:
        # (username, resource_type, resource, permission) -> {"role", "grant_id"}
        self._grants: dict = {}
        self._lock = threading.Lock()

    def status(self) -> dict:
        with self._lock:
            return {"grants": len(self._grants)}

    def list_resources(self, resource_type: str) -> dict:
        catalog = self._catalog(resource_type)
        return {
            "resources": [
                {"id": name, "name": name, "type": resource_type, "metadata": dict(meta)}
                for name, meta in sorted(catalog.items())
            ],
            "permissions": [{"id": k, "name": v} for k, v in self.PERMISSIONS.items()],
        }

    def grant(self, request: AccessRequest) -> list:
        self._check(request)
        changes = []
        with self._lock:
            for resource in request.resources:
                key = (request.username, request.resource_type, resource, request.permission)
                changed = key not in self._grants
                if changed:
                    self._grants[key] = {"role": request.role(resource), "grant_id": request.grant_id}
                changes.append({"resource": resource, "role": request.role(resource), "changed": changed})
        return changes

    def revoke(self, request: AccessRequest) -> list:
        self._check(request)
        changes = []
        with self._lock:
            for resource in request.resources:
                key = (request.username, request.resource_type, resource, request.permission)
                changed = self._grants.pop(key, None) is not None
                changes.append({"resource": resource, "role": request.role(resource), "changed": changed})
        return changes

    def _catalog(self, resource_type: str) -> dict:
        try:
            return self.CATALOG[resource_type]
        except KeyError:
            known = ", ".join(sorted(self.CATALOG))
            raise BusinessError(
                f"unknown resource_type {resource_type!r}; this function manages: {known}"
            ) from None

    def _check(self, request: AccessRequest) -> None:
        """Everything is checked before anything changes: all or nothing."""
        catalog = self._catalog(request.resource_type)
        unknown = [r for r in request.resources if r not in catalog]
        if unknown:
            raise BusinessError(
                f"unknown {request.resource_type} resource(s): {', '.join(unknown)}"
            )
        if request.permission not in self.PERMISSIONS:
            known = ", ".join(self.PERMISSIONS)
            raise BusinessError(
                f"unknown permission {request.permission!r}; expected one of: {known}"
            )
