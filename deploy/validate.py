#!/usr/bin/env python3
"""Validate grantbridge's deployment artifacts without a cluster, a Docker
engine or Google credentials. Run from anywhere: python3 deploy/validate.py

What it checks (each line it prints is one check; it exits 1 on any failure):

1. Kubernetes manifests (deploy/kubernetes/**.yaml): every object against the
   Kubernetes OpenAPI schemas of K8S_VERSIONS in strict mode (unknown fields
   fail), with kubernetes-validate. Kustomizations: every listed resource and
   patch exists. If `kubectl` is on PATH, `kubectl kustomize` builds the poll
   and push sets and the built output is validated too (else: skipped): no
   Secret in it, a hashed ConfigMap name. Custom resources (ServiceMonitor,
   PodMonitor, PrometheusRule, GKE PodMonitoring and BackendConfig) are
   validated strictly against their upstream schemas in deploy/crds/; every
   alert and dashboard query is parsed with promql-parser and may name only
   metrics the daemon exports.
2. Semantics of each workload (raw manifests, kustomize output, Helm renders):
   the embedded grantbridge.toml parses as TOML, satisfies the schema generated
   from docs/configuration.md (deploy/helm/config_schema.py: only documented
   keys, types and enums), and `grantbridge check --offline` (the daemon's own
   loader; secret files absent here are noted, not refused) accepts it;
   integrations name declared connections; the admin listener, container port and probes
   agree; the journal path, token file and push secret files are on the right
   kind of volume; the grace period exceeds engine.shutdown_grace; the pod is
   non-root with a read-only root filesystem, no privilege escalation, no
   capabilities and RuntimeDefault seccomp; poll mode has no [push] and no
   PVC, push mode has [push] and a PVC journal.
3. The Helm chart, with Helm's own Go code (helm-python-sdk: Helm v4 SDK via a
   C ABI, no helm binary): `helm lint --strict`, values.schema.json through
   Helm's validator and again with jsonschema, its config part current with
   docs/configuration.md, a matrix of value sets rendered and validated as in
   1 and 2 (one sets every documented key and every duration form), the
   rendered TOML compared key by key with the values it came from, and value
   sets that must be refused.
4. The Dockerfile (dockerfile-parse): stages, base images, --locked release
   build with cache mounts, USER 65532, HEALTHCHECK, EXPOSE, ENTRYPOINT, CMD,
   OCI labels, the journal volume; .dockerignore keeps target/ and .git out and
   keeps what cargo needs in.
5. The systemd unit: `systemd-analyze verify` (any warning fails), and the
   hardening directives are present (verify is skipped when systemd-analyze is
   missing); its grantbridge.toml and config/grantbridge.example.toml as in 2.
6. Terraform: every .tf/.tfvars parses (python-hcl2) and declares the expected
   resources; `terraform fmt -check` when terraform is on PATH.

Not checked here: that the image builds or runs (no Docker engine), anything
against a live API server (admission, defaulting, quotas, PSA), `terraform
validate`/`plan` (needs provider downloads), and that tokens can be minted
with the configs (run `grantbridge check` where they are deployed).
"""

from __future__ import annotations

import copy
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
K8S_VERSIONS = ["1.30.0", "1.37.0"]

# The configuration file's keys, types and enums come from the configuration
# reference (docs/configuration.md) through deploy/helm/config_schema.py, the
# same source as the chart's values schema: nothing here mirrors the daemon.
sys.path.insert(0, str(DEPLOY / "helm"))
import config_schema  # noqa: E402

CONFIG_SCHEMA = config_schema.config_schema()


def grantbridge_binary() -> str | None:
    """The daemon's binary for `check --offline`: $GRANTBRIDGE_BIN, else the
    workspace's debug build (.ci/run builds it before this script)."""
    for candidate in (os.environ.get("GRANTBRIDGE_BIN"), str(ROOT / "target" / "debug" / "grantbridge")):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


def check_offline(origin: str, text: str) -> None:
    """`grantbridge check --offline` on a configuration: the daemon's own
    loader accepts every key and value (secret files absent here are noted)."""
    binary = grantbridge_binary()
    if not binary:
        if os.environ.get("CI"):
            R.fail(f"{origin}: no grantbridge binary for check --offline (cargo build, or set GRANTBRIDGE_BIN)")
        else:
            R.skip(f"{origin}: check --offline not run (no target/debug/grantbridge; cargo build)")
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "grantbridge.toml"
        path.write_text(text)
        env = {"PATH": os.environ.get("PATH", ""), "HOME": tmp}
        proc = subprocess.run([binary, "--config", str(path), "check", "--offline"],
                              capture_output=True, text=True, env=env)
    R.check(proc.returncode == 0, f"{origin}: grantbridge check --offline accepts it",
            (proc.stdout + proc.stderr).strip()[-1500:])


JOURNAL_DIR = "/var/lib/grantbridge"


class Report:
    def __init__(self) -> None:
        self.passed = 0
        self.failed: list[str] = []
        self.skipped: list[str] = []

    def ok(self, what: str) -> None:
        self.passed += 1
        print(f"  ok    {what}")

    def fail(self, what: str) -> None:
        self.failed.append(what)
        print(f"  FAIL  {what}")

    def skip(self, what: str) -> None:
        self.skipped.append(what)
        print(f"  skip  {what}")

    def check(self, cond: bool, what: str, why: str = "") -> bool:
        if cond:
            self.ok(what)
        else:
            self.fail(f"{what}{': ' + why if why else ''}")
        return cond


R = Report()


def rel(p: Path | str) -> str:
    try:
        return str(Path(p).resolve().relative_to(ROOT))
    except ValueError:
        return str(p)


def section(title: str) -> None:
    print(f"\n== {title}")


def duration_seconds(text: str) -> float:
    units = {"ms": 0.001, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}
    total = 0.0
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]+)", text.strip())
    if not parts or "".join(f"{n}{u}" for n, u in parts) != re.sub(r"\s+", "", text.strip()):
        raise ValueError(f"not a duration: {text!r}")
    for number, unit in parts:
        if unit not in units:
            raise ValueError(f"unknown unit in {text!r}")
        total += float(number) * units[unit]
    return total


# --------------------------------------------------------------------------
# Kubernetes schema validation

CRDS = DEPLOY / "crds"


def strict(schema: dict) -> dict:
    """A CRD's openAPIV3Schema as the API server applies it: fields it does
    not define are refused, except where it preserves unknown fields."""
    schema = copy.deepcopy(schema)

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if ("properties" in node and "additionalProperties" not in node
                    and not node.get("x-kubernetes-preserve-unknown-fields")):
                node["additionalProperties"] = False
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)
    walk(schema)
    return schema


def crd_schemas() -> dict[tuple[str, str], dict]:
    """(apiVersion, kind) -> strict schema, from deploy/crds/."""
    found = {}
    for f in sorted(CRDS.glob("*.json")):
        d = json.loads(f.read_text())
        found[(d["apiVersion"], d["kind"])] = strict(d["schema"])
    return found


def k8s_validate(docs: list[tuple[str, dict]]) -> None:
    import jsonschema
    import kubernetes_validate
    from kubernetes_validate.utils import ValidationError, SchemaNotFoundError

    crds = crd_schemas()
    for origin, doc in docs:
        name = f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
        crd = crds.get((doc.get("apiVersion"), doc.get("kind")))
        if crd is not None:
            errs = [f"{e.message} at {'.'.join(str(p) for p in e.absolute_path)}"
                    for e in jsonschema.Draft7Validator(crd).iter_errors(doc)]
            R.check(not errs, f"{origin}: {name} valid (strict) against its CRD schema (deploy/crds)",
                    "; ".join(errs)[:800])
            continue
        problems = []
        for version in K8S_VERSIONS:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except ValidationError as e:
                problems.append(f"{version}: {e.message} at {'.'.join(str(p) for p in e.path)}")
            except SchemaNotFoundError as e:
                problems.append(f"{version}: no schema ({e})")
        R.check(not problems, f"{origin}: {name} valid (strict) for Kubernetes {', '.join(K8S_VERSIONS)}",
                "; ".join(problems))


def load_yaml_docs(path: Path) -> list[dict]:
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


# --------------------------------------------------------------------------
# Semantic checks of a workload and its configuration

def check_config(origin: str, text: str, mode: str) -> dict | None:
    """A workload's grantbridge.toml (mode "poll" or "push"; "any" for a
    file that belongs to no workload)."""
    try:
        cfg = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        R.fail(f"{origin}: grantbridge.toml does not parse: {e}")
        return None
    import jsonschema

    problems = [f"{'.'.join(str(p) for p in e.absolute_path) or '(top)'}: {e.message}"
                for e in jsonschema.Draft7Validator(CONFIG_SCHEMA).iter_errors(cfg)]
    for name, integ in cfg.get("integrations", {}).items():
        if integ.get("connection") not in cfg.get("connections", {}):
            problems.append(f"integrations.{name}.connection {integ.get('connection')!r} is not declared")
    if "connector_id" not in cfg:
        problems.append("connector_id missing")
    if mode == "poll" and "push" in cfg:
        problems.append("[push] in a poll-mode (emptyDir journal) workload")
    if mode == "push" and "push" not in cfg:
        problems.append("push-mode workload without [push]")
    R.check(not problems, f"{origin}: grantbridge.toml has only documented keys and types",
            "; ".join(problems))
    check_offline(origin, text)
    return cfg


def check_workload(origin: str, workload: dict, configmaps: dict[str, dict]) -> None:
    kind = workload["kind"]
    mode = "push" if kind == "StatefulSet" else "poll"
    spec = workload["spec"]
    pod = spec["template"]["spec"]
    where = f"{origin}: {kind}/{workload['metadata']['name']}"
    containers = pod.get("containers", [])
    if not R.check(len(containers) == 1, f"{where}: one container"):
        return
    c = containers[0]
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    claims = {t["metadata"]["name"] for t in spec.get("volumeClaimTemplates", [])}
    mounts = {m["mountPath"]: m for m in c.get("volumeMounts", [])}

    # The config file.
    cfg_mount = mounts.get("/etc/grantbridge")
    cm_name = cfg_mount and volumes.get(cfg_mount["name"], {}).get("configMap", {}).get("name")
    if not R.check(bool(cm_name) and cm_name in configmaps,
                   f"{where}: /etc/grantbridge is a mounted ConfigMap that exists",
                   f"ConfigMap {cm_name!r} not found"):
        return
    args = c.get("args", [])
    R.check("--config" in args and args[args.index("--config") + 1] == "/etc/grantbridge/grantbridge.toml"
            and args[0] == "run", f"{where}: runs `run --config /etc/grantbridge/grantbridge.toml`")
    cfg = check_config(where, configmaps[cm_name]["data"]["grantbridge.toml"], mode)
    if cfg is None:
        return

    # Admin listener, ports and probes.
    listen = cfg.get("admin", {}).get("listen", "127.0.0.1:9090")
    host, _, port = listen.rpartition(":")
    ports = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
    R.check(host in ("0.0.0.0", "[::]"), f"{where}: admin listens on all interfaces ({listen})")
    R.check(ports.get("admin") == int(port), f"{where}: containerPort admin = admin.listen port {port}")
    for probe, path in (("startupProbe", "/healthz"), ("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        p = c.get(probe, {}).get("httpGet", {})
        R.check(p.get("path") == path and p.get("port") in ("admin", int(port)),
                f"{where}: {probe} GET {path} on the admin port", f"got {p}")
    if mode == "push":
        plisten = cfg["push"].get("listen", "")
        R.check(ports.get("push") == int(plisten.rpartition(":")[2] or 0),
                f"{where}: containerPort push = push.listen port ({plisten})")

    # Journal: emptyDir in poll mode, a PVC per replica in push mode.
    jpath = cfg.get("journal", {}).get("path", f"{JOURNAL_DIR}/journal.db")
    jdir = os.path.dirname(jpath)
    jm = mounts.get(jdir)
    if R.check(jm is not None and not jm.get("readOnly", False),
               f"{where}: journal directory {jdir} is a writable mount"):
        if mode == "poll":
            R.check("emptyDir" in volumes.get(jm["name"], {}) and not claims,
                    f"{where}: poll-mode journal is an emptyDir (no PVC)")
        else:
            R.check(jm["name"] in claims and jm["name"] not in volumes,
                    f"{where}: push-mode journal comes from volumeClaimTemplates")
    R.check("/tmp" in mounts and "emptyDir" in volumes.get(mounts["/tmp"]["name"], {}),
            f"{where}: /tmp is an emptyDir")

    # Secret files named by the config are mounted secrets.
    def secret_file(key: str, path: str) -> None:
        d, f = os.path.dirname(path), os.path.basename(path)
        m = mounts.get(d)
        sec = m and volumes.get(m["name"], {}).get("secret")
        items = (sec or {}).get("items")
        R.check(bool(sec) and (items is None or f in {i["path"] for i in items}),
                f"{where}: {key} {path} is a file of a mounted Secret")

    cp = cfg.get("control_plane")
    if cp is not None:
        R.check("token_file" in cp, f"{where}: control_plane.token_file is set (connector token from a Secret)")
        if "token_file" in cp:
            secret_file("control_plane.token_file", cp["token_file"])
    for i, f in enumerate(cfg.get("push", {}).get("secret_files", [])):
        secret_file(f"push.secret_files[{i}]", f)

    # Graceful drain fits in the grace period.
    grace = duration_seconds(cfg.get("engine", {}).get("shutdown_grace", "30s"))
    tgps = pod.get("terminationGracePeriodSeconds", 30)
    R.check(tgps > grace, f"{where}: terminationGracePeriodSeconds {tgps} > engine.shutdown_grace {grace:g}s")

    # Security context.
    psc, csc = pod.get("securityContext", {}), c.get("securityContext", {})
    problems = []
    if not (psc.get("runAsNonRoot") or csc.get("runAsNonRoot")):
        problems.append("runAsNonRoot")
    if csc.get("readOnlyRootFilesystem") is not True:
        problems.append("readOnlyRootFilesystem")
    if csc.get("allowPrivilegeEscalation") is not False:
        problems.append("allowPrivilegeEscalation: false")
    if csc.get("capabilities", {}).get("drop") != ["ALL"] or csc.get("capabilities", {}).get("add"):
        problems.append("capabilities drop [ALL], add none")
    if "RuntimeDefault" not in (psc.get("seccompProfile", {}).get("type"), csc.get("seccompProfile", {}).get("type")):
        problems.append("seccompProfile RuntimeDefault")
    uid = csc.get("runAsUser", psc.get("runAsUser"))
    if uid != 65532:
        problems.append(f"runAsUser 65532 (got {uid})")
    R.check(not problems, f"{where}: restricted security context", "missing " + ", ".join(problems))
    res = c.get("resources", {})
    R.check(bool(res.get("requests")) and bool(res.get("limits", {}).get("memory")),
            f"{where}: resource requests and a memory limit")


def check_set(origin: str, docs: list[dict]) -> None:
    """Semantic checks over one deployable set of objects."""
    configmaps = {d["metadata"]["name"]: d for d in docs if d.get("kind") == "ConfigMap"}
    workloads = [d for d in docs if d.get("kind") in ("Deployment", "StatefulSet")]
    if not R.check(len(workloads) == 1, f"{origin}: exactly one workload (Deployment or StatefulSet)",
                   f"found {[w['kind'] for w in workloads]}"):
        return
    w = workloads[0]
    check_workload(origin, w, configmaps)
    labels = w["spec"]["template"]["metadata"]["labels"]
    for d in docs:
        sel = None
        if d["kind"] == "PodDisruptionBudget":
            sel = d["spec"]["selector"]["matchLabels"]
        elif d["kind"] == "NetworkPolicy":
            sel = d["spec"]["podSelector"]["matchLabels"]
        elif d["kind"] == "Service":
            sel = d["spec"].get("selector")
        if sel is not None:
            R.check(all(labels.get(k) == v for k, v in sel.items()),
                    f"{origin}: {d['kind']}/{d['metadata']['name']} selects the workload's pods")
    sa = w["spec"]["template"]["spec"].get("serviceAccountName")
    R.check(any(d["kind"] == "ServiceAccount" and d["metadata"]["name"] == sa for d in docs),
            f"{origin}: ServiceAccount {sa} is part of the set")
    if w["kind"] == "StatefulSet":
        svc = w["spec"].get("serviceName")
        R.check(any(d["kind"] == "Service" and d["metadata"]["name"] == svc
                    and d["spec"].get("clusterIP") == "None" for d in docs),
                f"{origin}: the StatefulSet's headless Service {svc} exists")
    nps = [d for d in docs if d["kind"] == "NetworkPolicy"]
    if nps:
        egress = [r for np in nps for r in np["spec"].get("egress", [])]
        def allows(port: int, cidr: str | None = None) -> bool:
            for r in egress:
                if any(p.get("port") == port for p in r.get("ports", [])):
                    if cidr is None or any(t.get("ipBlock", {}).get("cidr") == cidr for t in r.get("to", [])):
                        return True
            return False
        R.check(allows(53) and allows(443) and allows(80, "169.254.169.254/32") and allows(988, "169.254.169.252/32"),
                f"{origin}: NetworkPolicy egress allows DNS, 443, metadata server (:80 and .252:988)")


def exported_metrics() -> set[str]:
    """Every series name the daemon exports (docs/check_docs.py reads
    src/metrics.rs), with a histogram's _bucket/_sum/_count."""
    sys.path.insert(0, str(ROOT / "docs"))
    import check_docs

    names = set()
    for name, _labels in check_docs.registered_metrics():
        names |= {name, name + "_bucket", name + "_sum", name + "_count"}
    return names


def check_promql(origin: str, expr: str) -> None:
    """`expr` parses as PromQL (promql-parser, the Rust parser's Python
    binding) and names only metrics the daemon exports."""
    import promql_parser

    try:
        promql_parser.parse(expr)
    except Exception as e:  # noqa: BLE001 - the parser raises ValueError subclasses
        R.fail(f"{origin}: PromQL does not parse: {e}: {expr}")
        return
    unknown = sorted(set(re.findall(r"\bgrantbridge_\w+", expr)) - exported_metrics())
    R.check(not unknown, f"{origin}: PromQL parses and names exported metrics", f"unknown {unknown}")


def check_monitoring(origin: str, docs: list[dict]) -> None:
    """ServiceMonitor, PodMonitor, PodMonitoring, PrometheusRule, the Grafana
    dashboard, Ingress, BackendConfig, Namespace and the helm test pod of one render."""
    by_kind: dict[str, list[dict]] = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
    workload = next((d for d in docs if d["kind"] in ("Deployment", "StatefulSet")), None)
    if workload is None:
        return
    pod = workload["spec"]["template"]
    pod_labels = pod["metadata"]["labels"]
    container = pod["spec"]["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
    services = {d["metadata"]["name"]: d for d in by_kind.get("Service", [])}
    for sm in by_kind.get("ServiceMonitor", []):
        sel = sm["spec"]["selector"]["matchLabels"]
        hits = [svc for svc in services.values()
                if all(svc["metadata"].get("labels", {}).get(k) == v for k, v in sel.items())]
        R.check(len(hits) == 1 and any(p["name"] == sm["spec"]["endpoints"][0]["port"] for p in hits[0]["spec"]["ports"]),
                f"{origin}: ServiceMonitor selects exactly the admin Service, by a port it has",
                f"selects {[h['metadata']['name'] for h in hits]}")
    for kind, key in (("PodMonitor", "podMetricsEndpoints"), ("PodMonitoring", "endpoints")):
        for pm in by_kind.get(kind, []):
            sel = pm["spec"]["selector"]["matchLabels"]
            R.check(all(pod_labels.get(k) == v for k, v in sel.items())
                    and all(e["port"] in ports and e.get("path") == "/metrics" for e in pm["spec"][key]),
                    f"{origin}: {kind} selects the pods and scrapes /metrics on the admin port")
    for rule in by_kind.get("PrometheusRule", []):
        R.check(not re.search(r"__[A-Z]+__", json.dumps(rule)),
                f"{origin}: PrometheusRule has every placeholder filled in")
        for group in rule["spec"]["groups"]:
            for r in group["rules"]:
                check_promql(f"{origin}: alert {r['alert']}", r["expr"])
    for cm in by_kind.get("ConfigMap", []):
        if "grantbridge.json" in cm.get("data", {}):
            dash = json.loads(cm["data"]["grantbridge.json"])
            for p in dash["panels"]:
                for t in p.get("targets", []):
                    check_promql(f"{origin}: dashboard panel {p['title']!r}",
                                 t["expr"].replace("$__rate_interval", "5m")
                                 .replace('"$namespace"', '".*"').replace('"$pod"', '".*"'))
    for ing in by_kind.get("Ingress", []):
        backend = ing["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
        svc = services.get(backend["name"])
        R.check(svc is not None and any(p["name"] == backend["port"]["name"] for p in svc["spec"]["ports"]),
                f"{origin}: Ingress routes to the push Service's push port")
    for bc in by_kind.get("BackendConfig", []):
        hc = bc["spec"]["healthCheck"]
        annotated = [n for n, svc in services.items()
                     if bc["metadata"]["name"] in svc["metadata"].get("annotations", {}).get("cloud.google.com/backend-config", "")]
        R.check(hc["requestPath"] == "/healthz" and hc["port"] == ports.get("push") and bool(annotated),
                f"{origin}: BackendConfig health-checks GET /healthz on the push port, attached to {annotated}")
    for test in by_kind.get("Pod", []):
        hooked = test["metadata"].get("annotations", {}).get("helm.sh/hook") == "test"
        args = test["spec"]["containers"][0]["args"]
        url = args[args.index("--url") + 1] if "--url" in args else ""
        admin = next((n for n in services if n.endswith("-admin")), None)
        selected = all(test["metadata"]["labels"].get(k) == v
                       for k, v in workload["spec"]["selector"]["matchLabels"].items())
        R.check(hooked and args[0] == "health" and admin is not None and f"//{admin}." in url
                and url.endswith("/readyz") and not selected,
                f"{origin}: helm test pod asks the admin Service's /readyz and is not selected as a replica",
                f"args {args}")
    for ns in by_kind.get("Namespace", []):
        labels = ns["metadata"]["labels"]
        R.check(labels.get("pod-security.kubernetes.io/enforce") == "restricted",
                f"{origin}: the Namespace enforces the restricted Pod Security Standard")
    nps = by_kind.get("NetworkPolicy", [])
    if nps and workload["kind"] == "StatefulSet":
        cidrs = {f.get("ipBlock", {}).get("cidr") for np in nps for r in np["spec"].get("ingress", [])
                 for f in r.get("from", [])}
        R.check(("35.191.0.0/16" in cidrs) == ("BackendConfig" in by_kind),
                f"{origin}: the NetworkPolicy admits Google's load-balancer ranges exactly when a BackendConfig is used")


# --------------------------------------------------------------------------

def generated_configmaps(kdir: Path) -> list[dict]:
    """The ConfigMaps a kustomization's configMapGenerator makes, as objects
    (unhashed names), so the files can be checked without kustomize."""
    kust = yaml.safe_load((kdir / "kustomization.yaml").read_text())
    made = []
    for g in kust.get("configMapGenerator", []):
        data = {}
        for src in g.get("files", []):
            key, _, path = src.rpartition("=")
            data[key or Path(path).name] = (kdir / path).read_text()
        made.append({"apiVersion": "v1", "kind": "ConfigMap",
                     "metadata": {"name": g["name"], "labels": g.get("options", {}).get("labels", {})},
                     "data": data})
    return made


def kubernetes_manifests() -> None:
    section(f"Kubernetes manifests (kubernetes-validate, strict, {', '.join(K8S_VERSIONS)})")
    files = sorted(Path(p) for p in glob.glob(str(DEPLOY / "kubernetes" / "**" / "*.yaml"), recursive=True))
    docs = []
    for f in files:
        try:
            loaded = load_yaml_docs(f)
        except yaml.YAMLError as e:
            R.fail(f"{rel(f)}: YAML does not parse: {e}")
            continue
        for d in loaded:
            if d.get("kind") == "Kustomization":
                missing = [r for r in d.get("resources", []) if not (f.parent / r).exists()]
                missing += [p["path"] for p in d.get("patches", []) if "path" in p and not (f.parent / p["path"]).exists()]
                missing += [src for g in d.get("configMapGenerator", []) + d.get("secretGenerator", [])
                            for src in g.get("files", []) if not (f.parent / src.split("=")[-1]).exists()]
                R.check(not missing, f"{rel(f)}: every resource and patch it lists exists", f"missing {missing}")
            else:
                docs.append((rel(f), d))
    k8s_validate(docs)

    section("Kubernetes manifests: semantics of the poll and push sets (from the files)")
    kdir = DEPLOY / "kubernetes"
    base = [d for f in sorted((kdir / "base").glob("*.yaml")) if f.name != "kustomization.yaml" for d in load_yaml_docs(f)]
    base += generated_configmaps(kdir / "base")
    check_set("deploy/kubernetes (poll)", base + load_yaml_docs(kdir / "deployment.yaml"))
    push = [d for d in base if d["kind"] != "ConfigMap"] + generated_configmaps(kdir / "push")
    for name in ("statefulset.yaml", "service.yaml", "networkpolicy-push.yaml"):
        push += load_yaml_docs(kdir / "push" / name)
    check_set("deploy/kubernetes/push", push)

    section("Kustomize builds (kubectl kustomize)")
    kubectl = shutil.which("kubectl")
    if not kubectl:
        R.skip("kubectl not on PATH: kustomize output not built (the files above were validated one by one)")
        return
    for overlay, label in ((kdir, "poll"), (kdir / "push", "push")):
        proc = subprocess.run([kubectl, "kustomize", str(overlay)], capture_output=True, text=True)
        if proc.returncode != 0:
            if "unknown command" in proc.stderr or "not found" in proc.stderr.lower() and "kustomiz" not in proc.stderr:
                R.skip(f"kubectl has no usable kustomize: {proc.stderr.strip()[:200]}")
                return
            R.fail(f"kubectl kustomize {rel(overlay)}: {proc.stderr.strip()}")
            continue
        built = [d for d in yaml.safe_load_all(proc.stdout) if d]
        R.ok(f"kubectl kustomize {rel(overlay)} builds ({len(built)} objects)")
        R.check(not any(d["kind"] == "Secret" for d in built),
                f"kustomize {label}: has no Secret (apply -k never overwrites a real one)")
        names = [d["metadata"]["name"] for d in built if d["kind"] == "ConfigMap"]
        R.check(len(names) == 1 and re.fullmatch(r"grantbridge-config-[a-z0-9]{10}", names[0]),
                f"kustomize {label}: the ConfigMap name carries the config's hash (a change rolls the pods)",
                f"{names}")
        k8s_validate([(f"kustomize {label}", d) for d in built])
        check_set(f"kustomize {label}", built)


# --------------------------------------------------------------------------

CHART = DEPLOY / "helm" / "grantbridge"

HELM_CASES: dict[str, dict] = {
    "poll, existing token Secret, two integrations": {
        "connectorToken": {"existingSecret": "gb-token"},
        "serviceAccount": {"gcpServiceAccount": "grantbridge@acme-prod.iam.gserviceaccount.com"},
        "config": {
            "connector_id": "conn-prod-1",
            "integrations": {
                "orders-db": {"connection": "gke", "project_id": "acme-prod", "region": "us-central1",
                              "function": "grant-orders-db", "max_attempts": 5, "timeout": "60s",
                              "custom_parameters": {"db_port": 5432, "ratio": 0.5, "tags": ["a", "b"],
                                                    "quote": "say \"hi\"\nnext line", "nested": {"k": True}}},
                "crm.eu": {"connection": "gke", "project_id": "acme-prod", "region": "europe-west1",
                           "function": "grant-crm", "url": "https://grant-crm-abc123def4-ew.a.run.app"},
            },
            "control_plane": {"url": "https://cp.example.com", "max_actions": 50, "wait": "20s"},
            "engine": {"shutdown_grace": "30s", "max_concurrency": 64},
        },
    },
    "push, existing push Secret with two keys (rotation), one replica, maxUnavailable PDB": {
        "mode": "push", "replicaCount": 1,
        "connectorToken": {"existingSecret": "gb-token"},
        "push": {"existingSecret": "gb-push", "existingSecretKeys": ["push-secret-1", "push-secret-2"]},
        "podDisruptionBudget": {"maxUnavailable": 1},
        "config": {"integrations": {"orders-db": {"connection": "gke", "project_id": "acme-prod",
                                                  "function": "grant-orders-db"}},
                   "push": {"max_body_bytes": 1048576}},
    },
    "push, inline secrets (chart-made Secrets), storage class": {
        "mode": "push",
        "connectorToken": {"value": "test-connector-token"},
        "push": {"secrets": ["0123456789abcdef0123456789abcdef"]},
        "journal": {"persistence": {"storageClassName": "premium-rwo", "size": "5Gi"}},
        "traces": {"otlpEndpoint": "https://otel-collector.monitoring:4318", "serviceName": "gb-push",
                   "headersSecret": "gb-otlp-headers"},
    },
    "poll, key file from a Secret (not GKE), no NetworkPolicy, digest, log level": {
        "connectorToken": {"existingSecret": "gb-token"},
        "googleCredentials": {"existingSecret": "gb-google-key"},
        "networkPolicy": {"enabled": False},
        "image": {"digest": "sha256:" + "a" * 64},
        "logLevel": "grantbridge=debug",
        "config": {"connections": {"gke": None, "prod": {"credentials": "service_account_key",
                                                          "key_file": "/var/run/secrets/grantbridge-google/key.json"}},
                   "integrations": {"orders-db": {"connection": "prod", "project_id": "acme-prod",
                                                  "function": "grant-orders-db"}}},
    },
    "poll, raw configToml": {
        "connectorToken": {"existingSecret": "gb-token"},
        "configToml": (
            'connector_id = "conn-raw"\n[admin]\nlisten = "0.0.0.0:9090"\n'
            '[connections.gke]\ncredentials = "metadata"\n'
            '[control_plane]\nurl = "https://cp.example.com"\n'
            'token_file = "/var/run/secrets/grantbridge/connector-token"\n'
            '[journal]\npath = "/var/lib/grantbridge/journal.db"\n'
        ),
    },
}

# Values for the documented keys whose default is not a literal (or must
# differ from it to be valid together); the rest take their documented default.
EXAMPLES = {
    ".connector_id": "conn-prod-1", ".instance_id": "gb-0/0001",
    "connections.NAME.credentials": "impersonate", "connections.NAME.source": "service_account_key",
    "connections.NAME.key_file": "/var/run/secrets/grantbridge-google/key.json",
    "connections.NAME.metadata_host": "169.254.169.254",
    "connections.NAME.target_service_account": "fn-invoker@acme-prod.iam.gserviceaccount.com",
    "connections.NAME.delegates": ["relay@acme-prod.iam.gserviceaccount.com"],
    "connections.NAME.iam_credentials_url": "https://iamcredentials.googleapis.com",
    "integrations.NAME.connection": "full", "integrations.NAME.project_id": "acme-prod",
    "integrations.NAME.function": "grant-orders-db", "integrations.NAME.custom_parameters": {"db": "orders", "port": 5432},
    "integrations.NAME.access_details": "https://orders.internal",
    "integrations.NAME.generation": 2, "integrations.NAME.url": "https://grant-orders-db-abc123def4-uc.a.run.app",
    "integrations.NAME.audience": "https://grant-orders-db-abc123def4-uc.a.run.app",
    "control_plane.url": "https://cp.example.com", "control_plane.token_file": "/etc/ignored-the-chart-sets-it",
    "push.listen": "0.0.0.0:1", "push.secret_files": ["/ignored"], "push.secret_envs": ["IGNORED"],
    "log.trace_project": "acme-prod", "log.format": "json",
    "traces.otlp_endpoint": "https://otel-collector.monitoring:4318", "traces.service_name": "grantbridge",
    "checks.online": True,
    # Every duration form of docs/configuration.md "Value formats".
    "integrations.NAME.timeout": "1m 30s", "checks.interval": "1h 30m", "journal.retention": "30d",
    "control_plane.unauthorized_retry": "1m 30s", "push.header_timeout": "1500ms", "tokens.refresh_ahead": "4m 30s",
}


def every_documented_key() -> dict:
    """A `config` value with every key of docs/configuration.md set."""
    config: dict = {}
    for section, key, cells in config_schema.rows():
        name = f"{section}.{key}"
        if name in EXAMPLES:
            value = EXAMPLES[name]
        else:
            m = re.match(r"`([^`]+)`", cells[2])
            if not m:
                raise SystemExit(f"validate.py: {name} has no literal default in docs/configuration.md; add it to EXAMPLES")
            value = json.loads(m.group(1))
        where = config
        for part in [p for p in section.replace("NAME", "full" if section.startswith("connections") else "orders-db").split(".") if p]:
            where = where.setdefault(part, {})
        where[key] = value
    return config


HELM_CASES["push, every documented config key and duration form"] = {
    "mode": "push", "connectorToken": {"existingSecret": "gb-token"},
    "push": {"existingSecret": "gb-push"}, "config": every_documented_key(),
}

HELM_CASES["poll, every monitoring object, a private CA bundle, extra volumes/env/args, namespace"] = {
    "connectorToken": {"existingSecret": "gb-token"},
    "metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
                "podMonitor": {"enabled": True}, "gkePodMonitoring": {"enabled": True},
                "prometheusRule": {"enabled": True}, "grafanaDashboard": {"enabled": True}},
    "networkPolicy": {"metricsFrom": [{"namespaceSelector": {"matchLabels": {"name": "observability"}}}]},
    "extraVolumes": [{"name": "ca-bundle", "configMap": {"name": "corp-ca-bundle"}}],
    "extraVolumeMounts": [{"name": "ca-bundle", "mountPath": "/etc/grantbridge-ca", "readOnly": True}],
    "extraEnv": [{"name": "SSL_CERT_FILE", "value": "/etc/grantbridge-ca/ca-bundle.pem"}],
    "envFrom": [{"secretRef": {"name": "grantbridge-env"}}],
    "extraArgs": ["--log-level", "grantbridge=debug"],
    "namespace": {"create": True},
}
HELM_CASES["push behind a GKE Ingress: BackendConfig health check, load-balancer ranges"] = {
    "mode": "push", "connectorToken": {"existingSecret": "gb-token"},
    "push": {"existingSecret": "gb-push",
             "ingress": {"enabled": True, "className": "gce", "host": "push.example.com",
                         "tls": [{"secretName": "gb-push-tls", "hosts": ["push.example.com"]}]},
             "gke": {"backendConfig": {"enabled": True}}},
    "networkPolicy": {"googleLoadBalancer": True},
}

# Value sets the chart must refuse, and a word the refusal must contain.
HELM_REFUSED: dict[str, tuple[dict, str]] = {
    "unknown mode": ({"mode": "pull", "connectorToken": {"existingSecret": "t"}}, "mode"),
    "misspelt config key": ({"connectorToken": {"existingSecret": "t"},
                             "config": {"engine": {"shutdown_grce": "30s"}}}, "shutdown_grce"),
    "unknown top-level value": ({"connectorToken": {"existingSecret": "t"}, "replicas": 3}, "replicas"),
    "control plane without a connector token": ({}, "connectorToken"),
    "push mode without HMAC secrets": ({"mode": "push", "connectorToken": {"existingSecret": "t"}}, "push"),
    "[push] in poll mode": ({"connectorToken": {"existingSecret": "t"},
                             "config": {"push": {"max_body_bytes": 10}}}, "mode"),
    "plain-http trace collector": ({"connectorToken": {"existingSecret": "t"},
                                    "traces": {"otlpEndpoint": "http://collector:4318"}}, "otlpEndpoint"),
    "admin listener turned off (the probes need it)": ({"connectorToken": {"existingSecret": "t"},
                                                       "config": {"admin": {"enabled": False}}}, "admin.enabled"),
    "a duration without a unit": ({"connectorToken": {"existingSecret": "t"},
                                   "config": {"engine": {"shutdown_grace": "30"}}}, "shutdown_grace"),
    "short inline HMAC secret": ({"mode": "push", "connectorToken": {"existingSecret": "t"},
                                  "push": {"secrets": ["short"]}}, "secrets"),
}


def merge(base: dict, over: dict) -> dict:
    """Helm's value coalescing for the cases above: maps merge, null deletes."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        if v is None:
            out.pop(k, None)
        elif isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def expected_toml(values: dict) -> dict:
    """The configuration the chart should write for `values` (dict mode)."""
    cfg = copy.deepcopy(values["config"])
    cfg.setdefault("admin", {})["listen"] = f"0.0.0.0:{values['admin']['port']}"
    cfg.setdefault("journal", {})["path"] = "/var/lib/grantbridge/journal.db"
    if "control_plane" in cfg:
        cfg["control_plane"].pop("token_env", None)
        cfg["control_plane"]["token_file"] = f"/var/run/secrets/grantbridge/{values['connectorToken']['key']}"
    if values["mode"] == "push":
        push = cfg.setdefault("push", {})
        push["listen"] = f"0.0.0.0:{values['push']['port']}"
        keys = (values["push"]["existingSecretKeys"] if values["push"]["existingSecret"]
                else [f"push-secret-{i + 1}" for i in range(len(values["push"]["secrets"]))])
        push["secret_files"] = [f"/var/run/secrets/grantbridge-push/{k}" for k in keys]
        push.pop("secret_envs", None)
    return cfg


def helm_chart() -> None:
    section("Helm chart (helm-python-sdk: Helm's Go SDK, no helm binary)")
    try:
        import helm_python as helm
    except Exception as e:  # noqa: BLE001 - a missing or broken native library
        R.fail(f"helm-python-sdk is not importable ({e}); pip install -r deploy/requirements.txt")
        return
    import jsonschema

    helm.disable_logging()
    R.ok(f"Helm SDK {helm.helm_sdk_version()} via helm-c-sdk {helm.helm_c_version()}")
    chart_meta = yaml.safe_load((CHART / "Chart.yaml").read_text())
    R.check(chart_meta.get("apiVersion") == "v2" and chart_meta.get("type") == "application",
            "Chart.yaml: apiVersion v2, type application")
    schema = json.loads((CHART / "values.schema.json").read_text())
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    try:
        jsonschema.Draft7Validator.check_schema(schema)
        R.ok("values.schema.json is a valid draft-07 schema")
    except jsonschema.SchemaError as e:
        R.fail(f"values.schema.json: {e.message}")
    R.check(schema["properties"]["config"] == config_schema.config_schema(),
            "values.schema.json's config part is generated from docs/configuration.md",
            "stale: run python3 deploy/helm/config_schema.py")
    errs = list(jsonschema.Draft7Validator(schema).iter_errors(defaults))
    R.check(not errs, "values.yaml satisfies values.schema.json (jsonschema)", "; ".join(e.message for e in errs))
    readme = subprocess.run([sys.executable, str(DEPLOY / "helm" / "chart_readme.py"), "--check"],
                            capture_output=True, text=True)
    R.check(readme.returncode == 0, "the chart's README.md is generated from values.yaml", readme.stderr.strip())
    undocumented = values_without_comment(CHART / "values.yaml")
    R.check(not undocumented, "every value in values.yaml has a comment", f"undocumented: {undocumented}")

    lint_values = HELM_CASES["poll, existing token Secret, two integrations"]
    report = helm.lint(str(CHART), lint_values, strict=True, kube_version="v1.30.0")
    bad = [m for m in report.get("messages", []) if m.get("severity", 0) >= 2] + report.get("errors", [])
    R.check(not bad, "helm lint --strict (kube 1.30) finds no warning or error",
            json.dumps(bad)[:500])

    with helm.Chart.load(str(CHART)) as chart:
        for case, over in HELM_CASES.items():
            values = merge(defaults, over)
            try:
                chart.validate_schema(over)
                rendered = chart.render(over, name="gb", namespace="grantbridge", is_install=True)
            except helm.HelmError as e:
                R.fail(f"helm [{case}]: does not render: {e}")
                continue
            R.ok(f"helm [{case}]: schema valid, renders ({len(rendered)} templates)")
            docs = []
            for path, text in sorted(rendered.items()):
                if path.endswith("NOTES.txt"):
                    R.check(bool(text.strip()), f"helm [{case}]: NOTES.txt renders")
                    continue
                docs += [d for d in yaml.safe_load_all(text) if d]
            k8s_validate([(f"helm [{case}]", d) for d in docs])
            check_set(f"helm [{case}]", [d for d in docs if d["kind"] != "Pod"])
            check_monitoring(f"helm [{case}]", docs)
            cm = next(d for d in docs if d["kind"] == "ConfigMap")
            got = tomllib.loads(cm["data"]["grantbridge.toml"])
            if values.get("configToml"):
                want = tomllib.loads(values["configToml"])
            else:
                want = expected_toml(values)
            R.check(got == want, f"helm [{case}]: grantbridge.toml is exactly the configuration given",
                    f"\n    got  {got}\n    want {want}")
        for case, (over, word) in HELM_REFUSED.items():
            try:
                chart.validate_schema(over)
                chart.render(over, name="gb", namespace="grantbridge", is_install=True)
                R.fail(f"helm refuses [{case}]: it rendered")
            except helm.HelmError as e:
                R.check(word.lower() in str(e).lower(), f"helm refuses [{case}]",
                        f"refused, but the message does not mention {word!r}: {e}")


def values_without_comment(path: Path) -> list[str]:
    """Keys of values.yaml with no comment on the lines right above them (or
    above their parent, for the members of a documented map/list value)."""
    missing, stack = [], []
    lines = path.read_text().splitlines()
    for i, line in enumerate(lines):
        m = re.match(r"^(\s*)([A-Za-z][\w.-]*):(\s|$)", line)
        if not m or line.lstrip().startswith("#"):
            continue
        indent = len(m.group(1))
        while stack and stack[-1][0] >= indent:
            stack.pop()
        j = i - 1
        commented = j >= 0 and lines[j].strip().startswith("#")
        parent_is_leafy = stack and stack[-1][2]
        is_parent = line.rstrip().endswith(":")
        if not commented and not parent_is_leafy and not is_parent:
            missing.append(".".join([s[1] for s in stack] + [m.group(2)]))
        # Members of a documented, non-section value (e.g. resources) are covered by its comment.
        stack.append((indent, m.group(2), bool(parent_is_leafy) or (commented and is_parent)))
    return missing


# --------------------------------------------------------------------------

def dockerfile() -> None:
    section("Dockerfile (dockerfile-parse)")
    from dockerfile_parse import DockerfileParser

    dfp = DockerfileParser(path=str(ROOT / "Dockerfile"))
    instr = dfp.structure
    froms = [i["value"] for i in instr if i["instruction"] == "FROM"]
    R.check(len(froms) >= 2, f"multi-stage ({len(froms)} stages)")
    arg_defaults = dict(re.findall(r"^ARG\s+(\w+)=(\S+)", dfp.content, re.M))
    first = re.sub(r"\$\{(\w+)\}", lambda m: arg_defaults.get(m.group(1), m.group(0)), froms[0].split()[0])
    R.check(re.fullmatch(r"rust:1(\.\d+)*-bookworm", first) is not None, f"builder is {first} (rust on bookworm)")
    R.check(froms[-1].split()[0] == "gcr.io/distroless/cc-debian12:nonroot",
            "runtime is gcr.io/distroless/cc-debian12:nonroot")
    final_start = max(idx for idx, i in enumerate(instr) if i["instruction"] == "FROM")
    final = instr[final_start:]
    runs = " ".join(i["value"] for i in instr[:final_start] if i["instruction"] == "RUN")
    R.check("cargo build" in runs and "--release" in runs and "--locked" in runs,
            "builder runs cargo build --release --locked")
    R.check("--no-default-features" in runs,
            "builder runs cargo build --no-default-features (no demo/sandbox, no fake token issuer)")
    R.check(runs.count("--mount=type=cache") >= 2, "cargo registry/target in BuildKit cache mounts")
    R.check(not any(i["instruction"] == "RUN" for i in final), "no RUN in the runtime stage (distroless: no shell)")
    users = [i["value"].strip() for i in final if i["instruction"] == "USER"]
    R.check(bool(users) and users[-1] in ("65532", "65532:65532"), f"runtime USER is 65532 ({users})")
    hc = [i["value"] for i in final if i["instruction"] == "HEALTHCHECK"]
    R.check(bool(hc) and re.search(r'CMD\s+\["/usr/local/bin/grantbridge",\s*"health"\]', hc[-1]) is not None,
            "HEALTHCHECK CMD [\"/usr/local/bin/grantbridge\",\"health\"] (exec form, no shell)")
    exposed = " ".join(i["value"] for i in final if i["instruction"] == "EXPOSE").split()
    R.check({"9090", "8443"} <= set(exposed), f"EXPOSE 9090 8443 ({exposed})")

    def exec_form(name: str) -> list | None:
        vals = [i["value"] for i in final if i["instruction"] == name]
        try:
            return json.loads(vals[-1]) if vals else None
        except json.JSONDecodeError:
            return None
    R.check(exec_form("ENTRYPOINT") == ["/usr/local/bin/grantbridge"], "ENTRYPOINT [\"/usr/local/bin/grantbridge\"]")
    R.check(exec_form("CMD") == ["run", "--config", "/etc/grantbridge/grantbridge.toml", "--log-format", "json"],
            "CMD [run --config /etc/grantbridge/grantbridge.toml --log-format json]")
    labels = dfp.labels
    need = {"org.opencontainers.image.title", "org.opencontainers.image.version",
            "org.opencontainers.image.revision", "org.opencontainers.image.licenses"}
    R.check(need <= set(labels), "OCI labels (title, version, revision, licenses)", f"missing {need - set(labels)}")
    R.check(any(i["instruction"] == "VOLUME" and JOURNAL_DIR in i["value"] for i in final),
            f"VOLUME {JOURNAL_DIR} (journal; read-only root works)")
    R.check(any(i["instruction"] == "COPY" and "--chown=65532:65532" in i["value"] and JOURNAL_DIR in i["value"]
                for i in final), f"{JOURNAL_DIR} owned by 65532 in the image")
    R.check(not any(i["instruction"] == "ADD" for i in instr), "no ADD (COPY only)")

    ignore = [ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines()
              if ln.strip() and not ln.startswith("#")]
    R.check("target/" in ignore or "target" in ignore, ".dockerignore excludes target/")
    R.check(".git" in ignore, ".dockerignore excludes .git")
    cargo = tomllib.loads((ROOT / "Cargo.toml").read_text())
    needed = {"src", "Cargo.toml", "Cargo.lock"} | {Path(b.get("path", f"benches/{b['name']}.rs")).parts[0]
                                                     for b in cargo.get("bench", [])}
    needed.add("tests")
    # Build settings (aws-lc without its CPU-jitter entropy: docs/security.md).
    needed.add(".cargo")
    # Workspace members: cargo reads every member's manifest to resolve the workspace.
    needed |= {m for m in cargo.get("workspace", {}).get("members", []) if m != "."}
    excluded = [n for n in needed if any(p.rstrip("/") in (n, n + "/") for p in ignore)]
    R.check(not excluded, f".dockerignore keeps what cargo needs ({', '.join(sorted(needed))})",
            f"excluded: {excluded}")


# --------------------------------------------------------------------------

def systemd_unit() -> None:
    section("systemd unit")
    unit = DEPLOY / "systemd" / "grantbridge.service"
    text = unit.read_text()
    directives = {}
    for line in text.splitlines():
        if "=" in line and not line.lstrip().startswith(("#", ";", "[")):
            k, _, v = line.partition("=")
            directives.setdefault(k.strip(), []).append(v.strip())
    want = {
        "Type": "exec", "DynamicUser": "yes", "StateDirectory": "grantbridge",
        "ConfigurationDirectory": "grantbridge", "ProtectSystem": "strict", "ProtectHome": "yes",
        "PrivateTmp": "yes", "PrivateDevices": "yes", "NoNewPrivileges": "yes",
        "ProtectKernelTunables": "yes", "ProtectKernelModules": "yes", "ProtectKernelLogs": "yes",
        "ProtectControlGroups": "yes", "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
        "RestrictNamespaces": "yes", "LockPersonality": "yes", "MemoryDenyWriteExecute": "yes",
        "SystemCallArchitectures": "native", "CapabilityBoundingSet": "",
        "ExecReload": "/bin/kill -HUP $MAINPID", "Restart": "on-failure",
        "LimitNOFILE": "65536",
    }
    wrong = [f"{k}={v}" for k, v in want.items() if v not in directives.get(k, [])]
    R.check(not wrong, "hardening and lifecycle directives present", f"missing/different: {wrong}")
    R.check("@system-service" in directives.get("SystemCallFilter", []), "SystemCallFilter=@system-service")
    stop = directives.get("TimeoutStopSec", ["0"])[0]
    R.check(duration_seconds(stop) > 30, f"TimeoutStopSec {stop} > default shutdown_grace 30s")
    creds = [v.split(":")[0] for v in directives.get("LoadCredential", [])]
    R.check("connector-token" in creds, f"LoadCredential for the connector token ({creds})")
    R.check(any(v.startswith("GRANTBRIDGE__CONTROL_PLANE__TOKEN_FILE=%d/") for v in directives.get("Environment", [])),
            "token_file points into $CREDENTIALS_DIRECTORY (%d)")
    exe = directives["ExecStart"][0].split()
    R.check(exe[1:] == ["run", "--config", "/etc/grantbridge/grantbridge.toml", "--log-format", "json"],
            "ExecStart runs the daemon with the config and JSON logs")

    shipped = DEPLOY / "systemd" / "grantbridge.toml"
    check_config(rel(shipped), shipped.read_text(), "poll")
    R.check(not any(v.startswith("GRANTBRIDGE__CONNECTIONS__") for v in directives.get("Environment", [])),
            "the unit sets no GRANTBRIDGE__CONNECTIONS__* variable (one would create a connection)")
    example = ROOT / "config" / "grantbridge.example.toml"
    check_config(rel(example), example.read_text(), "any")

    analyze = shutil.which("systemd-analyze")
    if not analyze:
        R.skip("systemd-analyze not on PATH: `systemd-analyze verify` not run")
        return
    with tempfile.TemporaryDirectory() as tmp:
        # The binary is not installed here: point ExecStart at an executable
        # that exists so verify checks everything else.
        copy_ = Path(tmp) / "grantbridge.service"
        true = shutil.which("true") or "/bin/true"
        copy_.write_text(re.sub(r"^ExecStart=\S+", f"ExecStart={true}", text, flags=re.M))
        proc = subprocess.run([analyze, "verify", str(copy_)], capture_output=True, text=True)
        out = "\n".join(ln for ln in (proc.stdout + proc.stderr).splitlines() if "grantbridge.service" in ln)
        R.check(proc.returncode == 0 and not out, "systemd-analyze verify: no error or warning",
                (out or proc.stderr).strip())
        sec = subprocess.run([analyze, "security", "--offline=yes", str(copy_)], capture_output=True, text=True)
        m = re.search(r"Overall exposure level for \S+: ([\d.]+)", sec.stdout + sec.stderr)
        if m:
            R.check(float(m.group(1)) <= 2.0, f"systemd-analyze security exposure {m.group(1)} (<= 2.0)")
        else:
            R.skip("systemd-analyze security --offline not supported by this systemd")


# --------------------------------------------------------------------------

def terraform() -> None:
    section("Terraform (python-hcl2; terraform fmt if installed)")
    import hcl2

    tf = DEPLOY / "terraform"
    resources: dict[str, dict] = {}
    for f in sorted(tf.glob("*.tf")) + sorted(tf.glob("*.tfvars")):
        try:
            with open(f) as fh:
                doc = hcl2.load(fh)
        except Exception as e:  # noqa: BLE001 - the parser raises lark errors
            R.fail(f"{rel(f)}: does not parse: {e}")
            continue
        R.ok(f"{rel(f)} parses")
        for block in doc.get("resource", []):
            for rtype, named in block.items():
                for name, body in named.items():
                    resources[f"{rtype.strip(chr(34))}.{name.strip(chr(34))}"] = body
    for want in ("google_service_account.grantbridge", "google_cloudfunctions_function_iam_member.invoker",
                 "google_cloudfunctions_function_iam_member.viewer", "google_cloud_run_v2_service_iam_member.invoker",
                 "google_service_account_iam_member.workload_identity",
                 "google_service_account_iam_member.token_creator"):
        R.check(want in resources, f"declares {want}")
    inv = resources.get("google_cloudfunctions_function_iam_member.invoker", {})
    R.check("for_each" in inv and "roles/cloudfunctions.invoker" in json.dumps(inv),
            "invoker binding is per function (for_each) with roles/cloudfunctions.invoker")
    wi = json.dumps(resources.get("google_service_account_iam_member.workload_identity", {}))
    R.check("roles/iam.workloadIdentityUser" in wi and ".svc.id.goog[" in wi,
            "Workload Identity binding: roles/iam.workloadIdentityUser for PROJECT.svc.id.goog[NS/KSA]")
    binary = shutil.which("terraform")
    if not binary:
        R.skip("terraform not on PATH: `terraform fmt -check` not run")
    else:
        proc = subprocess.run([binary, "fmt", "-check", "-diff", "-recursive", str(tf)], capture_output=True, text=True,
                              env={**os.environ, "TF_CLI_CONFIG_FILE": os.devnull})
        R.check(proc.returncode == 0, "terraform fmt -check", proc.stdout[-1000:])
    R.skip("terraform validate/plan: needs the google provider from the Terraform registry (not reachable here)")


def main() -> int:
    print(f"grantbridge deployment validation ({rel(DEPLOY)})")
    for step in (kubernetes_manifests, helm_chart, dockerfile, systemd_unit, terraform):
        try:
            step()
        except Exception as e:  # noqa: BLE001 - report and go on to the next step
            R.fail(f"{step.__name__}: crashed: {type(e).__name__}: {e}")
    print(f"\n{R.passed} passed, {len(R.failed)} failed, {len(R.skipped)} skipped")
    for f in R.failed:
        print(f"  FAILED: {f}")
    return 1 if R.failed else 0


if __name__ == "__main__":
    sys.exit(main())
