#!/usr/bin/env bash
# Points a GitOps repository's ModelDeployment at a new model version: writes the release patch
# (spec.model.version, image, optional uri, and the reference profile of that version) and the
# profile's ConfigMap, and lists the ConfigMap in the kustomization. The pipeline then commits
# and opens a change; Argo CD or Flux applies it and Drover rolls the version in by canary.
#
#   release-model.sh --dir GITOPS_DIR --name fraud --version 1.1.0 \
#       --image registry.example.com/ml/fraud@sha256:... --profile artifacts/profile.json [--uri s3://...]
#
# The profile must belong to the version (its modelVersion): Drover measures drift against the
# profile of the model that serves. Needs kubectl (for the ConfigMap) and python3.
set -euo pipefail

usage() { sed -n '2,12p' "$0" >&2; exit 2; }
DIR= NAME= VERSION= IMAGE= PROFILE= URI=
while [ $# -gt 0 ]; do
  case $1 in
    --dir) DIR=$2; shift 2 ;;
    --name) NAME=$2; shift 2 ;;
    --version) VERSION=$2; shift 2 ;;
    --image) IMAGE=$2; shift 2 ;;
    --profile) PROFILE=$2; shift 2 ;;
    --uri) URI=$2; shift 2 ;;
    *) usage ;;
  esac
done
[ -n "$DIR" ] && [ -n "$NAME" ] && [ -n "$VERSION" ] && [ -n "$IMAGE" ] && [ -n "$PROFILE" ] || usage
[[ $VERSION =~ ^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$ ]] || { echo "version $VERSION is not a label value" >&2; exit 1; }
[ -f "$DIR/kustomization.yaml" ] || { echo "$DIR/kustomization.yaml not found" >&2; exit 1; }

profile_version=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get("modelVersion", ""))' "$PROFILE")
if [ "$profile_version" != "$VERSION" ]; then
  echo "$PROFILE belongs to model version '$profile_version', not $VERSION" >&2
  exit 1
fi

configmap=$NAME-reference-$VERSION
mkdir -p "$DIR/profiles"
kubectl create configmap "$configmap" --from-file=profile.json="$PROFILE" --dry-run=client -o yaml \
  | grep -v '^  creationTimestamp: null$' > "$DIR/profiles/$configmap.yaml"

{
  echo "# Written by release-model.sh: the model the pipeline released. Do not edit by hand."
  echo "apiVersion: drover.dev/v1alpha1"
  echo "kind: ModelDeployment"
  echo "metadata:"
  echo "  name: $NAME"
  echo "spec:"
  echo "  model:"
  echo "    version: \"$VERSION\""
  echo "    image: $IMAGE"
  [ -n "$URI" ] && echo "    uri: $URI"
  echo "  monitoring:"
  echo "    reference:"
  echo "      configMapRef: {name: $configmap, key: profile.json}"
} > "$DIR/release.yaml"

# List the new profile; keep the previous ones (a rollback to the previous version needs its
# profile), but only the last three.
python3 - "$DIR/kustomization.yaml" "profiles/$configmap.yaml" "$NAME" <<'PY'
import os, sys
path, entry, name = sys.argv[1:]
lines = open(path).read().splitlines()
prefix = f"  - profiles/{name}-reference-"
if f"  - {entry}" not in lines:
    at = max((i for i, l in enumerate(lines) if l.startswith(prefix)), default=None)
    if at is None:
        at = lines.index("resources:")
    lines.insert(at + 1, f"  - {entry}")
profiles = [i for i, l in enumerate(lines) if l.startswith(prefix)]
for i in reversed(profiles[:-3]):
    gone = os.path.join(os.path.dirname(path), lines[i].strip()[2:])
    if os.path.exists(gone):
        os.remove(gone)
    del lines[i]
open(path, "w").write("\n".join(lines) + "\n")
PY
echo "released $NAME $VERSION ($IMAGE) in $DIR"
