#!/bin/sh
# raftd's entrypoint in the StatefulSet. Each pod is a member named after itself (raftd-0,
# raftd-1, ...), found by its peers through the headless Service.
#
# A pod whose volume holds a member (member.json) just starts. A pod with an empty volume
# bootstraps only when it is one of the initial members and no other initial member has a
# log, which is true at the StatefulSet's first start and never after: any other time a
# cluster exists, and this pod joins it (scaled up, or replaced after its volume was lost),
# adding itself as a learner if the cluster does not list it yet and promoting itself to
# voter from the background once it has caught up (the leader refuses until then).
# Bootstrapping an empty member into a cluster that exists would let it vote as if it had
# promised nothing.
set -eu

: "${POD_NAME:?the pod's name (fieldRef metadata.name)}"
: "${RAFTD_SERVICE:=raftd}"
: "${RAFTD_INITIAL_MEMBERS:=3}"
: "${RAFTD_DATA_DIR:=/data}"
: "${RAFTD_CLIENT_PORT:=7001}"
: "${RAFTD_PEER_PORT:=7101}"
: "${RAFTD_METRICS_PORT:=9100}"
: "${RAFTD_CLIENT_SERVICE:=raftd-client}"

ordinal="${POD_NAME##*-}"
set_name="${POD_NAME%-*}"
last=$(( ordinal < RAFTD_INITIAL_MEMBERS ? RAFTD_INITIAL_MEMBERS - 1 : ordinal ))
cluster=""
others=""
i=0
while [ "$i" -le "$last" ]; do
  member="${set_name}-$i"
  cluster="${cluster:+$cluster,}${member}=${member}.${RAFTD_SERVICE}:${RAFTD_PEER_PORT}"
  if [ "$i" -ne "$ordinal" ] && [ "$i" -lt "$RAFTD_INITIAL_MEMBERS" ]; then
    others="${others:+$others,}${member}.${RAFTD_SERVICE}:${RAFTD_CLIENT_PORT}"
  fi
  i=$((i + 1))
done
peer_addr="${POD_NAME}.${RAFTD_SERVICE}:${RAFTD_PEER_PORT}"
client_addr="${POD_NAME}.${RAFTD_SERVICE}:${RAFTD_CLIENT_PORT}"
service="${RAFTD_CLIENT_SERVICE}:${RAFTD_CLIENT_PORT}"

listed() {
  raftctl --endpoints "$service" --timeout 5 member list 2>/dev/null | grep -q "^${POD_NAME} "
}

join=""
if [ ! -e "${RAFTD_DATA_DIR}/member.json" ]; then
  if [ "$ordinal" -ge "$RAFTD_INITIAL_MEMBERS" ] \
      || raftctl --endpoints "$others" --timeout 3 --output json status 2>/dev/null \
         | grep -q '"last_index": [1-9]'; then
    echo "start.sh: ${POD_NAME} has an empty volume and a cluster exists: joining it"
    until listed; do
      raftctl --endpoints "$service" --timeout 5 member add "$POD_NAME" \
        --peer-addr "$peer_addr" --client-addr "$client_addr" --learner || sleep 2
    done
    join="--join"
    raftctl --endpoints "$service" --timeout 5 member list 2>/dev/null \
      | grep "^${POD_NAME} " | grep -q " learner " && (
      for _ in $(seq 1 600); do
        sleep 2
        raftctl --endpoints "$service" --timeout 5 member promote "$POD_NAME" 2>/dev/null \
          && exit 0
      done
      echo "start.sh: ${POD_NAME} was not promoted in 20 minutes: raftctl member promote" >&2
    ) &
  fi
fi

# The peer address is this pod's name in the headless Service, which the member binds:
# wait until the Service publishes it (publishNotReadyAddresses makes that immediate).
until python -c 'import socket, sys; socket.getaddrinfo(sys.argv[1], None)' \
    "${POD_NAME}.${RAFTD_SERVICE}" 2>/dev/null; do
  echo "start.sh: waiting for ${POD_NAME}.${RAFTD_SERVICE} to resolve"
  sleep 1
done

exec raftd run --id "$POD_NAME" --cluster "$cluster" \
  --client-addr "0.0.0.0:${RAFTD_CLIENT_PORT}" --advertise-client-addr "$client_addr" \
  --data-dir "$RAFTD_DATA_DIR" --metrics-addr "0.0.0.0:${RAFTD_METRICS_PORT}" --forward $join
