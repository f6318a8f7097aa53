"""Checks API answers against Google's own definition of each method: the
discovery documents google-api-python-client ships
(googleapiclient/discovery_cache/documents/*.json).

Each method's response schema becomes a JSON Schema in which every object
refuses a field Google does not define, every enum allows only Google's
values, and types are Google's (int64 and uint64 are JSON strings;
google-datetime is RFC 3339; google-duration ends in "s").

stdin: a JSON list of {"doc": "iamcredentials.v1", "method": "<method id>", "body": {...}}
Prints one line per answer; exits 1 if any answer does not conform.
"""
import json
import os
import re
import sys

import googleapiclient
import jsonschema

DOCS = os.path.join(os.path.dirname(googleapiclient.__file__), "discovery_cache", "documents")


def methods(node):
    for m in node.get("methods", {}).values():
        yield m
    for r in node.get("resources", {}).values():
        yield from methods(r)


def convert(schema, doc, seen=()):
    if "$ref" in schema:
        ref = schema["$ref"]
        if ref in seen:
            return {}  # a recursive type: its inner levels are not checked
        return convert(doc["schemas"][ref], doc, seen + (ref,))
    kind = schema.get("type")
    out = {}
    if "enum" in schema:
        out["enum"] = schema["enum"]
    if kind == "object":
        out["type"] = "object"
        if "properties" in schema:
            out["properties"] = {k: convert(v, doc, seen) for k, v in schema["properties"].items()}
        if "additionalProperties" in schema:
            out["additionalProperties"] = convert(schema["additionalProperties"], doc, seen)
        elif "properties" in schema:
            out["additionalProperties"] = False
    elif kind == "array":
        out["type"] = "array"
        out["items"] = convert(schema.get("items", {}), doc, seen)
    elif kind == "string":
        out["type"] = "string"
        fmt = schema.get("format")
        if fmt == "google-datetime":
            out["pattern"] = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$"
        elif fmt == "google-duration":
            out["pattern"] = r"^-?\d+(\.\d+)?s$"
        elif fmt in ("int64", "uint64"):
            out["pattern"] = r"^-?\d+$"
    elif kind == "integer":
        out["type"] = "integer"
    elif kind == "number":
        out["type"] = "number"
    elif kind == "boolean":
        out["type"] = "boolean"
    return out


def response_schema(doc_name, method_id):
    with open(os.path.join(DOCS, f"{doc_name}.json")) as f:
        doc = json.load(f)
    for m in methods(doc):
        if m["id"] == method_id:
            if "response" not in m:
                return {"type": "object", "maxProperties": 0}  # google.protobuf.Empty
            return convert(m["response"], doc)
    raise SystemExit(f"{doc_name}: no method {method_id}")


def main():
    failed = 0
    for case in json.load(sys.stdin):
        schema = response_schema(case["doc"], case["method"])
        errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(case["body"]), key=str)
        where = f'{case["doc"]} {case["method"]}'
        if errors:
            failed += 1
            for e in errors:
                path = ".".join(str(p) for p in e.absolute_path) or "(body)"
                print(f"FAIL {where}: {path}: {e.message}")
        else:
            print(f"ok   {where}")
    sys.exit(1 if failed else 0)


main()
