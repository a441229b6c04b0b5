#!/usr/bin/env python3
"""Runs Argo CD's health check for ModelDeployment (deploy/argocd/modeldeployment-health.lua)
on sample objects and checks the status it gives, the way Argo CD runs it: a global `obj`, the
script's return value a table with `status` and `message`. Lua 5.1 (Argo CD's gopher-lua speaks
5.1) through lupa, installed by helm.sh. The script is also checked to be the one in
docs/gitops.md.

    check_health_lua.py deploy/argocd/modeldeployment-health.lua docs/gitops.md
"""

import sys

try:
    from lupa import lua51 as lupa_lua
except ImportError:  # a lupa built without 5.1: the newest Lua it has
    import lupa as lupa_lua


def cond(type_, status, reason="", message=""):
    return {"type": type_, "status": status, "reason": reason, "message": message}


def md(status=None, generation=2):
    o = {"apiVersion": "drover.dev/v1alpha1", "kind": "ModelDeployment",
         "metadata": {"name": "fraud", "namespace": "ml", "generation": generation}}
    if status is not None:
        o["status"] = status
    return o


CASES = [
    ("no status yet", md(), "Progressing"),
    ("older generation observed",
     md({"observedGeneration": 1, "phase": "Healthy", "conditions": [cond("Ready", "True")]}), "Progressing"),
    ("serving", md({"observedGeneration": 2, "phase": "Healthy", "message": "serving 1.4.0",
                    "conditions": [cond("Ready", "True", "Available"), cond("Progressing", "False", "RolloutComplete"),
                                   cond("Degraded", "False"), cond("Stalled", "False"), cond("Reconciling", "False")]}),
     "Healthy"),
    ("canary at a step", md({"observedGeneration": 2, "phase": "Progressing",
                             "conditions": [cond("Ready", "True"), cond("Progressing", "True", "CanaryProgressing", "step 1/3: 10%")],
                             "rollout": {"phase": "Progressing", "revision": "abc"}}), "Progressing"),
    ("waiting for the new revision", md({"observedGeneration": 2, "phase": "Progressing",
                                         "conditions": [cond("Reconciling", "True", "WaitingForRevision")]}), "Progressing"),
    ("canary paused", md({"observedGeneration": 2, "phase": "Progressing",
                          "conditions": [cond("Ready", "True"), cond("Progressing", "True", "CanaryPaused", "paused by drover.dev/pause")],
                          "rollout": {"phase": "Paused", "revision": "abc"}}), "Suspended"),
    ("stalled on a missing profile", md({"observedGeneration": 2, "phase": "Failed",
                                         "conditions": [cond("Stalled", "True", "ReferenceProfileNotFound", "ConfigMap fraud-reference not found"),
                                                        cond("Degraded", "True", "ReferenceProfileNotFound")]}), "Degraded"),
    ("rolled back", md({"observedGeneration": 2, "phase": "RolledBack",
                        "conditions": [cond("Ready", "True"), cond("Degraded", "True", "RolledBack", "error rate 0.08 > 0.01")],
                        "rollout": {"phase": "RolledBack", "revision": "abc"}}), "Degraded"),
    ("degraded by an SLO breach", md({"observedGeneration": 2, "phase": "Degraded",
                                      "conditions": [cond("Ready", "True"), cond("Degraded", "True", "SLOBreached")]}), "Degraded"),
    ("not ready, nothing in flight", md({"observedGeneration": 2, "phase": "Healthy",
                                         "conditions": [cond("Ready", "False", "StableUnavailable")]}), "Progressing"),
]


def main():
    script_path, doc_path = sys.argv[1], sys.argv[2]
    script = open(script_path).read()
    doc = open(doc_path).read()
    body = "\n".join(l for l in script.splitlines() if not l.startswith("--"))
    if body.strip() not in doc:
        sys.exit(f"check_health_lua: FAIL: {doc_path} does not carry {script_path} (without its comment lines)")
    failed = 0
    for name, obj, want in CASES:
        lua = lupa_lua.LuaRuntime(unpack_returned_tuples=True)
        lua.globals().obj = lua.table_from(obj, recursive=True)
        hs = lua.execute(script)
        got = hs["status"]
        ok = got == want and isinstance(hs["message"], str) and hs["message"]
        print(f"{'ok  ' if ok else 'FAIL'} {name}: {got} ({hs['message']})")
        failed += not ok
    print(f"{len(CASES) - failed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
