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

exec "${KERNLET_PYTHON:-python3}" -m kernlet.kernel --socket "$KERNLET_SOCKET" "$@"
