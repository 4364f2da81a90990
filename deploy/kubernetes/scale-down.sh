#!/usr/bin/env bash
# Scale raftd's StatefulSet down by one member, in the order docs/deploy.md gives: the
# member leaves the configuration first (raftctl member remove, run in a pod that stays),
# then the StatefulSet shrinks, then the member's volume claim goes. The other way round the
# cluster would count a voter that no longer exists toward its majorities.
set -euo pipefail

usage() {
  cat <<'EOF'
usage: scale-down.sh [-n NAMESPACE] [-s STATEFULSET] [-p POD] [-e ENDPOINT] [--keep-volume]

Removes the highest-numbered member of raftd's StatefulSet (raftd-3 of four, say):
  1. kubectl exec POD -- raftctl --endpoints ENDPOINT member remove raftd-3
     (skipped if the cluster no longer lists it: a run cut short goes on from there);
  2. kubectl scale statefulset raftd --replicas=3, and waits for raftd-3 to go;
  3. kubectl delete pvc data-raftd-3 (a removed member can never rejoin with that data).
Refuses to go below the initial members (the StatefulSet's RAFTD_INITIAL_MEMBERS). One
member at a time: run it again for the next, once `raftctl member list` looks right.

  -n NAMESPACE   the namespace (default: kubectl's current one)
  -s STATEFULSET the StatefulSet (default: raftd)
  -p POD         the pod raftctl runs in (default: STATEFULSET-0)
  -e ENDPOINT    raftctl's --endpoints inside the pod (default: raftd-client:7001)
  --keep-volume  leave the volume claim (delete it by hand before scaling up again)
  -h, --help     this text
Environment: KUBECTL, the kubectl to run (default: kubectl).
EOF
}

die() {
  echo "scale-down.sh: $*" >&2
  exit 1
}

kubectl_bin="${KUBECTL:-kubectl}"
namespace=""
statefulset="raftd"
pod=""
endpoint="raftd-client:7001"
keep_volume=""
while [ "$#" -gt 0 ]; do
  case "$1" in
    -n) namespace="${2:?-n needs a namespace}"; shift 2 ;;
    -s) statefulset="${2:?-s needs a StatefulSet}"; shift 2 ;;
    -p) pod="${2:?-p needs a pod}"; shift 2 ;;
    -e) endpoint="${2:?-e needs HOST:PORT}"; shift 2 ;;
    --keep-volume) keep_volume=yes; shift ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
done
pod="${pod:-${statefulset}-0}"

command -v "$kubectl_bin" >/dev/null || die "$kubectl_bin is not on PATH (set KUBECTL)"
k() {
  if [ -n "$namespace" ]; then "$kubectl_bin" -n "$namespace" "$@"; else "$kubectl_bin" "$@"; fi
}
raftctl() {
  k exec "$pod" -- raftctl --endpoints "$endpoint" --timeout 10 "$@"
}
# Whether the cluster lists member $1. A failed list stops the script: "not listed" must
# never be guessed from a cluster that did not answer.
listed() {
  local members
  members=$(raftctl member list) || die "raftctl member list failed in $pod"
  grep -q "^$1 " <<<"$members"
}

replicas=$(k get statefulset "$statefulset" -o 'jsonpath={.spec.replicas}') \
  || die "no StatefulSet $statefulset${namespace:+ in $namespace}"
initial=$(k get statefulset "$statefulset" -o \
  'jsonpath={.spec.template.spec.containers[0].env[?(@.name=="RAFTD_INITIAL_MEMBERS")].value}')
initial="${initial:-3}"
claim=$(k get statefulset "$statefulset" -o 'jsonpath={.spec.volumeClaimTemplates[0].metadata.name}')
claim="${claim:-data}"
[[ "$replicas" =~ ^[0-9]+$ ]] || die "$statefulset has no replica count ($replicas)"
[[ "$initial" =~ ^[0-9]+$ ]] || die "RAFTD_INITIAL_MEMBERS is not a number ($initial)"
if [ "$replicas" -le "$initial" ]; then
  die "$statefulset has $replicas members, the initial $initial: not scaling below them"
fi
target=$((replicas - 1))
victim="${statefulset}-${target}"
[ "$pod" != "$victim" ] || die "raftctl cannot run in $victim, the member being removed (-p)"

if listed "$victim"; then
  echo "scale-down.sh: removing $victim from the configuration"
  raftctl member remove "$victim"
  ! listed "$victim" || die "$victim is still a member after raftctl member remove"
else
  echo "scale-down.sh: $victim is not a member (already removed): scaling down"
fi

echo "scale-down.sh: scaling $statefulset to $target"
k scale statefulset "$statefulset" --replicas="$target"
k wait --for=delete "pod/$victim" --timeout=120s >/dev/null 2>&1 || true
if k get pod "$victim" >/dev/null 2>&1; then
  die "$victim is still there after 120 s; delete ${claim}-${victim} once it has gone"
fi

if [ -n "$keep_volume" ]; then
  echo "scale-down.sh: kept ${claim}-${victim}; delete it before scaling up again"
else
  k delete pvc "${claim}-${victim}"
fi
echo "scale-down.sh: $statefulset has $target members"
