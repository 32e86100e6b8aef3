#!/bin/sh
# The envrun worker container's entrypoint (Dockerfile): names the host, checks once whether bubblewrap
# sandboxes can run in this container, then execs the command (the worker). It never stops the worker: the
# local, ssh, plugin and fake drivers work without bubblewrap, and the bubblewrap provider itself refuses
# its runs (acquire fails at once, `envrun env probe` says why) where bwrap cannot make its namespaces.
set -eu

ENVRUN_HOST_ID="${ENVRUN_HOST_ID:-$(hostname)}"
export ENVRUN_HOST_ID

# What the bubblewrap provider needs for every command: new user, pid, mount, ipc, uts and net namespaces
# and a fresh /proc in them.
if ! probe=$(bwrap --die-with-parent --unshare-all --ro-bind / / --proc /proc --dev /dev true 2>&1); then
  echo "[envrun] bubblewrap sandboxes cannot run in this container: ${probe:-bwrap failed}" >&2
  echo "[envrun] runs on the bubblewrap provider are refused (their acquire fails, not retried); other drivers are unaffected." >&2
  echo "[envrun] To allow it, give the worker service security_opt seccomp=unconfined, apparmor=unconfined (or an" >&2
  echo "[envrun] AppArmor profile allowing userns and mount) and systempaths=unconfined (Compose v2). See docker-compose.yml." >&2
fi

exec "$@"
