#!/bin/sh
# Entrypoint of kernlet kernel containers: run the optional bootstrap script, then become the
# in-container runtime (python3 -m kernlet.kernel), which serves the agent on a unix socket.
#
# Environment (all optional):
#   KERNLET_LIB      where the kernlet package is mounted   (default /opt/kernlet/lib)
#   KERNLET_SOCKET   the runtime's socket                   (default /opt/kernlet/ipc/runtime.sock)
#   KERNLET_WORKDIR  where code runs                        (default /home/work)
#   KERNLET_PYTHON   the interpreter                        (default python3)
#   KERNLET_START_TIMEOUT  seconds the runtime waits for its ipykernel (the agent sets
#                    agent.create-timeout; 60 without it)
#   KERNLET_SSH_PORT a session's kernel (docs/sessions.md): run dropbear as the kernel's user
#                    on this port of the session network's address only (never published);
#                    its host key is made here, in the runtime dir
# Extra arguments are passed to the runtime.

KERNLET_LIB=${KERNLET_LIB:-/opt/kernlet/lib}
KERNLET_SOCKET=${KERNLET_SOCKET:-/opt/kernlet/ipc/runtime.sock}
KERNLET_WORKDIR=${KERNLET_WORKDIR:-/home/work}
export KERNLET_WORKDIR
export PYTHONPATH="$KERNLET_LIB${PYTHONPATH:+:$PYTHONPATH}"

cd "$KERNLET_WORKDIR" 2>/dev/null || echo "kernlet: cannot enter $KERNLET_WORKDIR" >&2

# Sourced, so that what it exports reaches the runtime and the code it runs. A failure is
# reported and ignored; an `exit` in it ends the container.
if [ -f "$KERNLET_WORKDIR/.kernlet-bootstrap.sh" ]; then
    . "$KERNLET_WORKDIR/.kernlet-bootstrap.sh" \
        || echo "kernlet: the bootstrap script failed with status $?" >&2
fi

if [ -n "$KERNLET_SSH_PORT" ] && command -v dropbear >/dev/null; then
    ipc=$(dirname "$KERNLET_SOCKET")
    [ -f "$ipc/ssh_host_ed25519_key" ] ||
        dropbearkey -t ed25519 -f "$ipc/ssh_host_ed25519_key" >/dev/null 2>&1
    addr=$(hostname -i 2>/dev/null | cut -d' ' -f1)
    dropbear -F -E -s -p "${addr:+$addr:}$KERNLET_SSH_PORT" -r "$ipc/ssh_host_ed25519_key" \
        -P "$ipc/dropbear.pid" 2>>"$ipc/dropbear.log" &
fi

exec "${KERNLET_PYTHON:-python3}" -m kernlet.kernel --socket "$KERNLET_SOCKET" "$@"
