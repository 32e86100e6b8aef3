#!/bin/sh
# The namespace and envrun's search attributes on a running Temporal server. Run by docker-compose.yml's
# temporal-setup job (admin-tools image) and by test/cluster/harness.ts, which the cluster test suite runs: the
# same commands in both places.
#
# Waits for the frontend to answer, creates the namespace unless it exists, waits until the frontend serves
# it, then registers every search attribute (the server skips those already registered). Any
# other failure stops the script.
#
# Environment: TEMPORAL_ADDRESS; ENVRUN_SEARCH_ATTRIBUTES (space-separated Name:Type, e.g. EnvRunPhase:Keyword); TEMPORAL_NAMESPACE
# (default: default); NAMESPACE_RETENTION (default 7d); SETUP_WAIT_SECONDS (default 120).
set -eu

: "${TEMPORAL_ADDRESS:?TEMPORAL_ADDRESS is required}"
: "${ENVRUN_SEARCH_ATTRIBUTES:?ENVRUN_SEARCH_ATTRIBUTES is required}"
namespace="${TEMPORAL_NAMESPACE:-default}"
retention="${NAMESPACE_RETENTION:-7d}"
wait_seconds="${SETUP_WAIT_SECONDS:-120}"

waited=0
until temporal operator cluster health --address "$TEMPORAL_ADDRESS" >/dev/null 2>&1; do
  if [ "$waited" -ge "$wait_seconds" ]; then
    echo "Temporal at $TEMPORAL_ADDRESS did not become healthy within ${wait_seconds} s" >&2
    temporal operator cluster health --address "$TEMPORAL_ADDRESS"
    exit 1
  fi
  sleep 2
  waited=$((waited + 2))
done

if temporal operator namespace describe --address "$TEMPORAL_ADDRESS" --namespace "$namespace" >/dev/null 2>&1; then
  echo "namespace $namespace exists"
else
  temporal operator namespace create --address "$TEMPORAL_ADDRESS" --namespace "$namespace" --retention "$retention"
fi

# A new namespace reaches the frontend's namespace cache within its refresh interval (10 s by default).
waited=0
until temporal operator search-attribute list --address "$TEMPORAL_ADDRESS" --namespace "$namespace" >/dev/null 2>&1; do
  if [ "$waited" -ge "$wait_seconds" ]; then
    echo "namespace $namespace not served by $TEMPORAL_ADDRESS within ${wait_seconds} s" >&2
    temporal operator search-attribute list --address "$TEMPORAL_ADDRESS" --namespace "$namespace"
    exit 1
  fi
  sleep 1
  waited=$((waited + 1))
done

set --
for attribute in $ENVRUN_SEARCH_ATTRIBUTES; do
  set -- "$@" --name "${attribute%%:*}" --type "${attribute#*:}"
done
temporal operator search-attribute create --address "$TEMPORAL_ADDRESS" --namespace "$namespace" "$@"
echo "search attributes registered in $namespace: $ENVRUN_SEARCH_ATTRIBUTES"
