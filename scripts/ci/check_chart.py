#!/usr/bin/env python3
"""Checks on rendered Drover manifests (the Helm chart, the kustomize base), run by helm.sh.

    check_chart.py objects  RENDERED.yaml --out-builtin B.yaml --out-custom C.yaml
        split a rendering into built-in kinds (for kubernetes-validate) and CRD-based kinds
        (monitoring.coreos.com, checked for shape here)
    check_chart.py restricted RENDERED.yaml
        every pod template meets Pod Security "restricted"
    check_chart.py rbac RENDERED.yaml --expected DROVER_RBAC.yaml [--namespaced]
        the ClusterRole/Roles grant exactly what `drover rbac` generates from src/rbac.rs
    check_chart.py operator RENDERED.yaml --policy RENDER.yaml [--replicas N] [--leader-elect B]
        the operator's pods carry the labels Drover's per-ModelDeployment NetworkPolicy admits
        (read from `drover render`), replicas and leader election as asked
    check_chart.py rules RENDERED.yaml --out RULES.yaml
        the PrometheusRule's groups as a Prometheus rule file (for promtool check rules)

Needs PyYAML (installed with kubernetes-validate in helm.sh's venv).
"""

import argparse
import json
import sys

import yaml


def load(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def fail(msg):
    print(f"check_chart: FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


def name_of(o):
    m = o.get("metadata", {})
    return f"{o.get('kind')} {m.get('namespace', '')}/{m.get('name')}"


# ----------------------------------------------------------------------------- objects
MONITORING = "monitoring.coreos.com/v1"

# The fields of the Prometheus Operator kinds the chart renders, as in the prometheus-operator
# CRDs (v0.8x); unknown fields are errors, as kubectl's strict field validation would make them.
SHAPES = {
    "ServiceMonitor": {
        "spec": {"selector", "namespaceSelector", "endpoints", "jobLabel", "targetLabels", "podTargetLabels"},
        "endpoints": {"port", "targetPort", "path", "scheme", "interval", "scrapeTimeout", "honorLabels",
                      "honorTimestamps", "authorization", "tlsConfig", "relabelings", "metricRelabelings", "params"},
    },
    "PodMonitor": {
        "spec": {"selector", "namespaceSelector", "podMetricsEndpoints", "jobLabel", "podTargetLabels"},
        "podMetricsEndpoints": {"port", "portNumber", "targetPort", "path", "scheme", "interval", "scrapeTimeout",
                                "honorLabels", "honorTimestamps", "authorization", "tlsConfig", "relabelings",
                                "metricRelabelings", "params"},
    },
    "PrometheusRule": {"spec": {"groups"}},
}


def check_custom(o):
    kind = o["kind"]
    where = name_of(o)
    if o.get("apiVersion") != MONITORING:
        fail(f"{where}: apiVersion {o.get('apiVersion')}, want {MONITORING}")
    meta = o.get("metadata") or {}
    if not meta.get("name") or not meta.get("namespace"):
        fail(f"{where}: metadata.name and metadata.namespace are required")
    for k, v in (meta.get("labels") or {}).items():
        if not isinstance(v, str):
            fail(f"{where}: label {k} is not a string")
    spec = o.get("spec")
    if not isinstance(spec, dict):
        fail(f"{where}: spec must be an object")
    shape = SHAPES.get(kind)
    if shape is None:
        fail(f"{where}: no shape known for {kind}")
    unknown = set(spec) - shape["spec"]
    if unknown:
        fail(f"{where}: unknown spec fields {sorted(unknown)}")
    if kind in ("ServiceMonitor", "PodMonitor"):
        key = "endpoints" if kind == "ServiceMonitor" else "podMetricsEndpoints"
        sel = spec.get("selector", {}).get("matchLabels")
        if not sel or not all(isinstance(v, str) for v in sel.values()):
            fail(f"{where}: selector.matchLabels must be a non-empty map of strings")
        eps = spec.get(key)
        if not isinstance(eps, list) or not eps:
            fail(f"{where}: {key} must be a non-empty list")
        for ep in eps:
            unknown = set(ep) - shape[key]
            if unknown:
                fail(f"{where}: unknown endpoint fields {sorted(unknown)}")
            if not isinstance(ep.get("port"), str):
                fail(f"{where}: endpoint port must be a port name")
            auth = ep.get("authorization")
            if auth is not None:
                cred = auth.get("credentials", {})
                if auth.get("type") != "Bearer" or not cred.get("name") or not cred.get("key"):
                    fail(f"{where}: authorization must be Bearer with a Secret name and key")
            for r in ep.get("relabelings", []):
                if not set(r) <= {"sourceLabels", "separator", "targetLabel", "regex", "modulus", "replacement", "action"}:
                    fail(f"{where}: unknown relabeling fields in {r}")
    if kind == "PrometheusRule":
        groups = spec.get("groups")
        if not isinstance(groups, list) or not groups:
            fail(f"{where}: spec.groups must be a non-empty list")
        for g in groups:
            if not g.get("name") or not isinstance(g.get("rules"), list):
                fail(f"{where}: each group needs name and rules")
            for r in g["rules"]:
                if not isinstance(r.get("expr"), str) or not (r.get("alert") or r.get("record")):
                    fail(f"{where}: rule {r} needs expr and alert or record")
                for k, v in (r.get("labels") or {}).items():
                    if not isinstance(v, str):
                        fail(f"{where}: rule {r.get('alert')}: label {k} is not a string")


def cmd_objects(args):
    docs = load(args.rendered)
    builtin, custom = [], []
    for o in docs:
        if not isinstance(o, dict) or "kind" not in o or "apiVersion" not in o:
            fail(f"not a Kubernetes object: {str(o)[:200]}")
        if o["apiVersion"].startswith("monitoring.coreos.com/"):
            check_custom(o)
            custom.append(o)
        else:
            builtin.append(o)
        if o["kind"] == "ConfigMap":
            for key, text in (o.get("data") or {}).items():
                if key.endswith(".json"):
                    try:
                        json.loads(text)
                    except ValueError as e:
                        fail(f"{name_of(o)}: {key} is not JSON: {e}")
    with open(args.out_builtin, "w") as f:
        yaml.safe_dump_all(builtin, f, sort_keys=False)
    with open(args.out_custom, "w") as f:
        yaml.safe_dump_all(custom, f, sort_keys=False)
    kinds = sorted(f"{o['kind']}" for o in docs)
    print(f"{len(docs)} objects: {', '.join(kinds)}")


# -------------------------------------------------------------------------- restricted
def pod_specs(o):
    kind = o.get("kind")
    spec = o.get("spec") or {}
    if kind == "Pod":
        yield spec
    elif kind in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"):
        yield spec.get("template", {}).get("spec", {})
    elif kind == "CronJob":
        yield spec.get("jobTemplate", {}).get("spec", {}).get("template", {}).get("spec", {})


def check_restricted(where, ps):
    """Pod Security Standards, "restricted" profile (baseline included where it applies)."""
    psc = ps.get("securityContext") or {}
    for f in ("hostNetwork", "hostPID", "hostIPC"):
        if ps.get(f):
            fail(f"{where}: {f}")
    for v in ps.get("volumes") or []:
        allowed = {"name", "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral",
                   "persistentVolumeClaim", "projected", "secret"}
        if not set(v) <= allowed:
            fail(f"{where}: volume type {sorted(set(v) - allowed)} not allowed")
    pod_seccomp = (psc.get("seccompProfile") or {}).get("type")
    pod_nonroot = psc.get("runAsNonRoot")
    if psc.get("runAsUser") == 0:
        fail(f"{where}: pod runAsUser 0")
    containers = (ps.get("containers") or []) + (ps.get("initContainers") or []) + (ps.get("ephemeralContainers") or [])
    if not containers:
        fail(f"{where}: no containers")
    for c in containers:
        cw = f"{where} container {c.get('name')}"
        sc = c.get("securityContext") or {}
        if sc.get("privileged"):
            fail(f"{cw}: privileged")
        if sc.get("allowPrivilegeEscalation") is not False:
            fail(f"{cw}: allowPrivilegeEscalation must be false")
        caps = sc.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            fail(f"{cw}: capabilities must drop ALL")
        if set(caps.get("add") or []) - {"NET_BIND_SERVICE"}:
            fail(f"{cw}: capabilities.add beyond NET_BIND_SERVICE")
        nonroot = sc.get("runAsNonRoot", pod_nonroot)
        if nonroot is not True:
            fail(f"{cw}: runAsNonRoot must be true (pod or container)")
        if sc.get("runAsUser") == 0:
            fail(f"{cw}: runAsUser 0")
        seccomp = (sc.get("seccompProfile") or {}).get("type", pod_seccomp)
        if seccomp not in ("RuntimeDefault", "Localhost"):
            fail(f"{cw}: seccompProfile must be RuntimeDefault or Localhost, got {seccomp}")
        for p in c.get("ports") or []:
            if p.get("hostPort"):
                fail(f"{cw}: hostPort")
        if not (c.get("resources") or {}).get("requests"):
            fail(f"{cw}: no resource requests")


def cmd_restricted(args):
    n = 0
    for o in load(args.rendered):
        for ps in pod_specs(o):
            check_restricted(name_of(o), ps)
            n += 1
    if n == 0:
        fail("no pod template rendered")
    print(f"{n} pod template(s) meet Pod Security restricted")


# -------------------------------------------------------------------------------- rbac
def rule_set(rules):
    out = []
    for r in rules or []:
        extra = set(r) - {"apiGroups", "resources", "verbs"}
        if extra:
            fail(f"unexpected rule fields {sorted(extra)} in {r}")
        out.append((tuple(r["apiGroups"]), tuple(r["resources"]), tuple(r["verbs"])))
    return out


def cmd_rbac(args):
    got = load(args.rendered)
    want = load(args.expected)

    def roles(docs, kind):
        return [o for o in docs if o["kind"] == kind]

    def watched_rules(docs):
        crs = roles(docs, "ClusterRole")
        rs = [o for o in roles(docs, "Role") if not o["metadata"]["name"].endswith("-leader-election")]
        return crs, rs

    g_cr, g_r = watched_rules(got)
    w_cr, w_r = watched_rules(want)
    if args.namespaced:
        if g_cr or roles(got, "ClusterRoleBinding"):
            fail("namespaced mode renders a ClusterRole or ClusterRoleBinding")
        g_ns = sorted(o["metadata"]["namespace"] for o in g_r)
        w_ns = sorted(o["metadata"]["namespace"] for o in w_r)
        if g_ns != w_ns:
            fail(f"Roles in namespaces {g_ns}, want {w_ns}")
    elif len(g_cr) != 1 or len(roles(got, "ClusterRoleBinding")) != 1:
        fail("cluster mode must render one ClusterRole and one ClusterRoleBinding")
    for g, w in zip(g_cr + g_r, w_cr + w_r):
        if rule_set(g.get("rules")) != rule_set(w.get("rules")):
            fail(f"{name_of(g)} grants {rule_set(g.get('rules'))}\nwant {rule_set(w.get('rules'))}")
    for o in g_cr + g_r:
        for group, resources, verbs in rule_set(o.get("rules")):
            if "*" in verbs or "*" in resources or "*" in group:
                fail(f"{name_of(o)}: wildcard")
            if "secrets" in resources and set(verbs) - {"get", "create"}:
                fail(f"{name_of(o)}: Secrets beyond get/create: {verbs}")
    leader = [o for o in roles(got, "Role") if o["metadata"]["name"].endswith("-leader-election")]
    w_leader = [o for o in roles(want, "Role") if o["metadata"]["name"].endswith("-leader-election")]
    if args.leader_elect:
        if len(leader) != 1 or rule_set(leader[0].get("rules")) != rule_set(w_leader[0].get("rules")):
            fail("the leader-election Role differs from drover rbac")
    elif leader:
        fail("a leader-election Role without leader election")
    # Bindings point at the roles that exist and at the operator's ServiceAccount.
    sa_names = {o["metadata"]["name"] for o in got if o["kind"] == "ServiceAccount"}
    for b in roles(got, "RoleBinding") + roles(got, "ClusterRoleBinding"):
        target = [o for o in got if o["kind"] == b["roleRef"]["kind"] and o["metadata"]["name"] == b["roleRef"]["name"]]
        if not target:
            fail(f"{name_of(b)} binds a {b['roleRef']['kind']} that is not rendered")
        for s in b["subjects"]:
            if sa_names and s["name"] not in sa_names:
                fail(f"{name_of(b)} binds ServiceAccount {s['name']}, not the rendered one")
    print(f"RBAC equals drover rbac ({len(g_cr)} ClusterRole, {len(g_r)} Role(s), leader election {bool(leader)})")


# ---------------------------------------------------------------------------- operator
def cmd_operator(args):
    docs = load(args.rendered)
    deps = [o for o in docs if o["kind"] == "Deployment"]
    if len(deps) != 1:
        fail(f"{len(deps)} operator Deployments")
    d = deps[0]
    labels = d["spec"]["template"]["metadata"]["labels"]
    policies = [o for o in load(args.policy) if o["kind"] == "NetworkPolicy"]
    if not policies:
        fail("drover render printed no NetworkPolicy")
    admitted = 0
    for p in policies:
        for rule in p["spec"].get("ingress", []):
            for peer in rule.get("from") or []:
                want = (peer.get("podSelector") or {}).get("matchLabels")
                if want and all(labels.get(k) == v for k, v in want.items()):
                    admitted += 1
    if admitted == 0:
        fail(f"the operator's pod labels {labels} are not admitted by Drover's NetworkPolicy")
    sel = d["spec"]["selector"]["matchLabels"]
    if not all(labels.get(k) == v for k, v in sel.items()):
        fail("the Deployment's selector does not match its pod labels")
    if args.replicas is not None and d["spec"]["replicas"] != args.replicas:
        fail(f"replicas {d['spec']['replicas']}, want {args.replicas}")
    c = d["spec"]["template"]["spec"]["containers"][0]
    argv = c.get("args") or []
    if args.leader_elect is not None:
        flag = f"--leader-elect={args.leader_elect}"
        if flag not in argv:
            fail(f"{flag} not in {argv}")
    env = {e["name"]: e.get("value") for e in c.get("env") or []}
    if "POD_NAMESPACE" not in env:
        fail("POD_NAMESPACE (Lease and NetworkPolicy namespace) not set")
    if args.monitor_image and env.get("DROVER_MONITOR_IMAGE") != c["image"]:
        fail(f"DROVER_MONITOR_IMAGE {env.get('DROVER_MONITOR_IMAGE')} is not the operator's image {c['image']}")
    print(f"operator: {d['spec'].get('replicas')} replica(s), labels admitted by Drover's NetworkPolicy")


# ------------------------------------------------------------------------------- rules
def cmd_rules(args):
    groups = []
    for o in load(args.rendered):
        if o["kind"] == "PrometheusRule":
            groups += o["spec"]["groups"]
    if not groups:
        fail("no PrometheusRule rendered")
    with open(args.out, "w") as f:
        yaml.safe_dump({"groups": groups}, f, sort_keys=False)
    print(f"{sum(len(g['rules']) for g in groups)} rules in {len(groups)} groups")


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("objects")
    p.add_argument("rendered")
    p.add_argument("--out-builtin", required=True)
    p.add_argument("--out-custom", required=True)
    p = sub.add_parser("restricted")
    p.add_argument("rendered")
    p = sub.add_parser("rbac")
    p.add_argument("rendered")
    p.add_argument("--expected", required=True)
    p.add_argument("--namespaced", action="store_true")
    p.add_argument("--no-leader-elect", dest="leader_elect", action="store_false")
    p = sub.add_parser("operator")
    p.add_argument("rendered")
    p.add_argument("--policy", required=True)
    p.add_argument("--replicas", type=int)
    p.add_argument("--leader-elect", choices=["true", "false"])
    p.add_argument("--monitor-image", action="store_true", help="DROVER_MONITOR_IMAGE must be the operator's image")
    p = sub.add_parser("rules")
    p.add_argument("rendered")
    p.add_argument("--out", required=True)
    args = ap.parse_args()
    {"objects": cmd_objects, "restricted": cmd_restricted, "rbac": cmd_rbac,
     "operator": cmd_operator, "rules": cmd_rules}[args.cmd](args)


if __name__ == "__main__":
    main()
