"""Tests of the example function, through functions-framework's own app
(`create_app`) and Flask's test client: what Cloud Functions runs.

    python3 -m pytest examples/functions/python
    python3 -m unittest discover -s examples/functions/python
"""

import contextlib
import copy
import io
import json
import os
import sys
import unittest

from functions_framework import create_app

from idempotency_store import (
    IN_PROGRESS,
    MISMATCH,
    NEW,
    REPLAY,
    Answer,
    FirestoreIdempotencyStore,
    fingerprint,
    InMemoryIdempotencyStore,
    store_from_env,
)

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "main.py")
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
BEARER = "Bearer eyJhbGciOiJSUzI1NiJ9.secret-token-material.sig"


def access(event_type="grant-access", resources=("orders",), permission="read", **extra):
    params = {
        "grant_id": "g-1",
        "username": "alice@example.com",
        "resource_type": "db",
        "resources": list(resources),
        "permission": permission,
        "custom_parameters": {"role_prefix": "app_"},
    }
    params.update(extra)
    return {"event_type": event_type, "params": params}


class FunctionTest(unittest.TestCase):
    def setUp(self):
        # create_app loads main.py afresh: a new instance with empty state.
        self.app = create_app(target="handle", source=SOURCE)
        self.main = sys.modules["main"]
        self.client = self.app.test_client()
        self.logs = io.StringIO()

    def call(self, body, key=None, **headers):
        headers = {"traceparent": TRACEPARENT, "Authorization": BEARER, **headers}
        if key is not None:
            headers["Idempotency-Key"] = key
        with contextlib.redirect_stdout(self.logs):
            if isinstance(body, (dict, list)):
                resp = self.client.post("/", json=body, headers=headers)
            else:
                resp = self.client.post("/", data=body, headers=headers, content_type="application/json")
        return resp

    def grants(self):
        return self.call({"event_type": "get-status"}).get_json()["grants"]

    def log_lines(self):
        return [json.loads(line) for line in self.logs.getvalue().splitlines() if line.strip()]


class ContractTest(FunctionTest):
    def test_get_status(self):
        resp = self.call({"event_type": "get-status", "params": {"custom_parameters": {}}})
        self.assertEqual(resp.status_code, 200)
        body = resp.get_json()
        self.assertEqual(body["status"], "ok")
        self.assertEqual((body["backend"], body["idempotency_store"], body["grants"]), ("in-memory", "memory", 0))

    def test_list_resources_answers_resources_and_permissions(self):
        resp = self.call({"event_type": "list-resources", "params": {"resource_type": "db"}}, key="act-l")
        self.assertEqual(resp.status_code, 200)
        body = resp.get_json()
        self.assertEqual([r["id"] for r in body["resources"]], ["customers", "orders", "payments"])
        for r in body["resources"]:
            self.assertEqual(set(r), {"id", "name", "type", "metadata"})
            self.assertEqual(r["type"], "db")
        self.assertIn({"id": "read", "name": "Read only"}, body["permissions"])
        self.assertNotIn("status", body)  # a list answer is the lists, nothing else

    def test_grant_then_revoke_changes_the_backend(self):
        grant = self.call(access(), key="act-1").get_json()
        self.assertEqual(grant, {"status": "ok", "grant_id": "g-1", "replayed": False,
                                 "changes": [{"resource": "orders", "role": "app_orders_read", "changed": True}]})
        self.assertEqual(self.grants(), 1)
        revoke = self.call(access("revoke-access"), key="act-2").get_json()
        self.assertEqual((revoke["status"], revoke["changes"][0]["changed"]), ("ok", True))
        self.assertEqual(self.grants(), 0)
        # Revoking what is not granted is done already: ok, nothing changed.
        again = self.call(access("revoke-access"), key="act-3").get_json()
        self.assertEqual((again["status"], again["changes"][0]["changed"]), ("ok", False))

    def test_role_prefix_comes_from_custom_parameters(self):
        body = access(resources=("orders", "payments"), permission="write")
        body["params"]["custom_parameters"] = {"role_prefix": "prod_"}
        changes = self.call(body, key="act-p").get_json()["changes"]
        self.assertEqual([c["role"] for c in changes], ["prod_orders_write", "prod_payments_write"])

    def test_business_failures_are_status_error_and_change_nothing(self):
        resp = self.call(access(resources=("orders", "nope")), key="act-b1")
        self.assertEqual(resp.status_code, 200)
        self.assertEqual(resp.get_json()["status"], "error")
        self.assertIn("unknown db resource(s): nope", resp.get_json()["message"])
        self.assertEqual(self.grants(), 0, "all or nothing: orders was not granted either")
        resp = self.call(access(permission="superuser"), key="act-b2")
        self.assertIn("unknown permission 'superuser'", resp.get_json()["message"])
        resp = self.call({"event_type": "list-resources", "params": {"resource_type": "bucket"}})
        self.assertEqual(resp.get_json()["status"], "error")
        self.assertIn("unknown resource_type 'bucket'", resp.get_json()["message"])

    def test_bad_requests_are_400_with_a_message(self):
        cases = [
            ("not json", "JSON object"),
            ([1, 2], "JSON object"),
            ({"event_type": "create-credentials", "params": {}}, "unsupported event_type 'create-credentials'"),
            ({"params": {}}, "unsupported event_type None"),
            ({"event_type": "list-resources", "params": {}}, "params.resource_type is required"),
            ({"event_type": "grant-access", "params": "x"}, "params must be a JSON object"),
            (access(resources=()), "params.resources: a non-empty array"),
            (access(grant_id=""), "params.grant_id is required"),
            (access(custom_parameters={"role_prefix": "x; DROP ROLE"}), "role_prefix"),
        ]
        for body, message in cases:
            with self.subTest(body=body):
                resp = self.call(body, key="act-bad")
                self.assertEqual(resp.status_code, 400)
                self.assertEqual(resp.get_json()["status"], "error")
                self.assertIn(message, resp.get_json()["message"])
        too_long = self.call(access(), key="k" * 256)
        self.assertEqual(too_long.status_code, 400)
        self.assertEqual(self.grants(), 0)


class IdempotencyTest(FunctionTest):
    def test_a_repeated_key_gets_the_first_answer_without_running_again(self):
        first = self.call(access(), key="act-7")
        self.call(access("revoke-access"), key="act-8")  # the grant is gone now
        again = self.call(access(), key="act-7")
        self.assertEqual(again.status_code, 200)
        self.assertEqual(again.headers["Idempotent-Replayed"], "true")
        self.assertNotIn("Idempotent-Replayed", first.headers)
        self.assertEqual(again.get_json(), {**first.get_json(), "replayed": True})
        self.assertEqual(self.grants(), 0, "the replay did not grant again")

    def test_business_failures_are_replayed_too(self):
        self.call(access(resources=("nope",)), key="act-f")
        self.main.BACKEND.CATALOG = {"db": {"nope": {}}}  # now it would succeed
        again = self.call(access(resources=("nope",)), key="act-f").get_json()
        self.assertEqual((again["status"], again["replayed"]), ("error", True))

    def test_a_key_reused_for_another_request_is_422(self):
        self.call(access(), key="act-9")
        resp = self.call(access(permission="write"), key="act-9")
        self.assertEqual(resp.status_code, 422)
        self.assertIn("different request", resp.get_json()["message"])

    def test_a_key_still_running_gets_429_with_retry_after(self):
        # Another request with this key is being served right now.
        self.main.IDEMPOTENCY.claim("act-slow", fingerprint("grant-access", access()["params"]))
        resp = self.call(access(), key="act-slow")
        self.assertEqual(resp.status_code, 429)
        self.assertEqual(resp.headers["Retry-After"], "2")
        self.assertEqual(self.grants(), 0)

    def test_an_unexpected_failure_is_500_and_the_retry_runs_again(self):
        real = self.main.BACKEND

        class Down:
            name = "down"

            def grant(self, request):
                raise ConnectionError("database unreachable")

        self.main.BACKEND = Down()
        resp = self.call(access(), key="act-500")
        self.assertEqual(resp.status_code, 500)
        self.assertIn("retry", resp.get_json()["message"])
        self.main.BACKEND = real
        retry = self.call(access(), key="act-500")
        self.assertEqual((retry.status_code, retry.get_json()["replayed"]), (200, False))
        self.assertEqual(self.grants(), 1)

    def test_without_a_key_every_call_runs(self):
        self.call(access())
        second = self.call(access()).get_json()
        self.assertEqual((second["replayed"], second["changes"][0]["changed"]), (False, False))

    def test_reads_always_run(self):
        body = {"event_type": "list-resources", "params": {"resource_type": "db"}}
        self.call(body, key="act-r")
        self.assertNotIn("Idempotent-Replayed", self.call(body, key="act-r").headers)


class LoggingTest(FunctionTest):
    def test_json_lines_carry_the_trace_and_never_the_token(self):
        self.main.PROJECT = "acme-prod"
        self.call(access(), key="act-log")
        self.call(access(), key="act-log")
        lines = self.log_lines()
        self.assertEqual(len(lines), 2)
        for line in lines:
            self.assertEqual(line["logging.googleapis.com/trace"],
                             "projects/acme-prod/traces/0af7651916cd43dd8448eb211c80319c")
            self.assertEqual(line["logging.googleapis.com/spanId"], "b7ad6b7169203331")
            self.assertIs(line["logging.googleapis.com/trace_sampled"], True)
            self.assertEqual((line["idempotency_key"], line["event_type"]), ("act-log", "grant-access"))
            self.assertEqual(line["severity"], "INFO")
        self.assertEqual((lines[0]["replayed"], lines[1]["replayed"]), (False, True))
        self.assertNotIn("secret-token-material", self.logs.getvalue())
        self.assertNotIn("Bearer", self.logs.getvalue())

    def test_a_malformed_traceparent_is_ignored(self):
        self.call(access(), key="act-t", traceparent="garbage")
        (line,) = self.log_lines()
        self.assertNotIn("trace_id", line)
        self.assertNotIn("logging.googleapis.com/trace", line)


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


class InMemoryStoreTest(unittest.TestCase):
    def test_claim_complete_replay_and_expiry(self):
        clock = FakeClock()
        store = InMemoryIdempotencyStore(ttl_seconds=60, claim_seconds=10, clock=clock)
        self.assertEqual(store.claim("k", "f").outcome, NEW)
        self.assertEqual(store.claim("k", "f").outcome, IN_PROGRESS)
        self.assertEqual(store.claim("k", "other").outcome, MISMATCH)
        store.complete("k", Answer(200, {"status": "ok"}))
        claim = store.claim("k", "f")
        self.assertEqual((claim.outcome, claim.answer), (REPLAY, Answer(200, {"status": "ok"})))
        clock.now += 59
        self.assertEqual(store.claim("k", "f").outcome, REPLAY)
        clock.now += 1
        self.assertEqual(store.claim("k", "f").outcome, NEW, "forgotten after the TTL")

    def test_an_abandoned_claim_expires(self):
        clock = FakeClock()
        store = InMemoryIdempotencyStore(claim_seconds=10, clock=clock)
        store.claim("k", "f")
        clock.now += 10
        self.assertEqual(store.claim("k", "f").outcome, NEW)

    def test_release_forgets_and_size_is_bounded(self):
        store = InMemoryIdempotencyStore(max_entries=3)
        for k in "abcd":
            store.claim(k, "f")
        self.assertEqual(len(store), 3)
        self.assertEqual(store.claim("a", "f").outcome, NEW, "the oldest went first")
        store.release("a")
        self.assertEqual(store.claim("a", "f").outcome, NEW)

    def test_store_from_env(self):
        self.assertEqual(store_from_env({}).name, "memory")
        with self.assertRaises(ValueError):
            store_from_env({"IDEMPOTENCY_STORE": "redis"})


class FakeFirestore:
    """Just enough of google.cloud.firestore for FirestoreIdempotencyStore."""

    class Snapshot:
        def __init__(self, data):
            self.exists = data is not None
            self._data = data

        def to_dict(self):
            return copy.deepcopy(self._data)

    class Doc:
        def __init__(self, docs, doc_id):
            self.docs, self.id = docs, doc_id

        def get(self, transaction=None):
            return FakeFirestore.Snapshot(self.docs.get(self.id))

        def update(self, fields):
            self.docs[self.id].update(copy.deepcopy(fields))

        def delete(self):
            self.docs.pop(self.id, None)

    class Transaction:
        def set(self, doc, data):
            doc.docs[doc.id] = copy.deepcopy(data)

    def __init__(self):
        self.docs = {}

    @staticmethod
    def transactional(fn):
        return fn  # the real decorator retries on contention

    def transaction(self):
        return FakeFirestore.Transaction()

    def collection(self, name):
        self.collection_name = name
        return self

    def document(self, doc_id):
        return FakeFirestore.Doc(self.docs, doc_id)


class FirestoreStoreTest(unittest.TestCase):
    def test_claim_complete_replay_release(self):
        fs = FakeFirestore()
        store = FirestoreIdempotencyStore(client=fs, firestore_module=fs, collection="keys")
        self.assertEqual(fs.collection_name, "keys")
        self.assertEqual(store.claim("act-1", "f").outcome, NEW)
        self.assertEqual(store.claim("act-1", "f").outcome, IN_PROGRESS)
        self.assertEqual(store.claim("act-1", "g").outcome, MISMATCH)
        store.complete("act-1", Answer(200, {"status": "ok", "changes": []}))
        claim = store.claim("act-1", "f")
        self.assertEqual((claim.outcome, claim.answer.body), (REPLAY, {"status": "ok", "changes": []}))
        (doc_id,) = fs.docs
        self.assertNotIn("act-1", doc_id, "document ids are digests of the key")
        store.release("act-1")
        self.assertEqual(store.claim("act-1", "f").outcome, NEW)

    def test_an_expired_document_is_claimed_again(self):
        fs = FakeFirestore()
        store = FirestoreIdempotencyStore(client=fs, firestore_module=fs, claim_seconds=-1)
        store.claim("k", "f")
        self.assertEqual(store.claim("k", "f").outcome, NEW)


if __name__ == "__main__":
    unittest.main()
