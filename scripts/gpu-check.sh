#!/usr/bin/env bash
# kernlet's GPU check, for a machine with an NVIDIA GPU (Debian/Ubuntu, NVIDIA driver, Docker;
# the NVIDIA container toolkit optional). As root, from the repository:
#
#     bash scripts/gpu-check.sh                 # prints PASS or FAIL last; exit 0 = PASS
#
# 1. detects the GPUs (nvidia-smi -L, else NVML through ctypes); none: FAIL
# 2. finds kernlet's Python (KERNLET_PY, else .venv, else makes .venv and pip-installs the
#    project: that needs a package index or PIP_FIND_LINKS), brings up the half stack
#    (kernlet halfstack up) and the kernel image (KERNLET_GPU_IMAGE, default
#    kernlet/python:3.11, built with `kernlet image build python` if missing)
# 3. starts an agent of its own (id gpu-check-<pid>, var dir under a temp dir, watcher off,
#    resource.cuda-access = $GPU_CHECK_ACCESS: auto | toolkit | device-nodes; default auto)
# 4. checks that the agent advertises cuda.device, creates a kernel with cuda.device = 1, and
#    inside it runs NVML through ctypes (libnvidia-ml.so.1) and nvidia-smi -L: PASS when the
#    kernel can open exactly one GPU, its NVIDIA_VISIBLE_DEVICES is the one it was given and
#    CUDA_VISIBLE_DEVICES is set
# 5. cleans up (kernel, agent, its containers, the temp dir), also on FAIL or timeout
#
# GPU_CHECK_PORTS: the agent's container port-range (default "31500, 31600").
# Bounded: the whole run is killed after GPU_CHECK_TIMEOUT seconds (default 540).
# docs/resources.md, "GPUs in containers", says what the kernel is given and how.
set -uo pipefail
if [ -z "${GPU_CHECK_INNER:-}" ]; then
    export GPU_CHECK_INNER=1
    exec timeout --kill-after=15 "${GPU_CHECK_TIMEOUT:-540}" bash "$0" "$@"
fi
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"
IMAGE="${KERNLET_GPU_IMAGE:-kernlet/python:3.11}"
ACCESS="${GPU_CHECK_ACCESS:-auto}"
AGENT_ID="gpu-check-$$"
WORK="$(mktemp -d /tmp/kernlet-gpu-check.XXXXXX)"
AGENT_PID=""

say() { printf '[gpu-check] %s\n' "$*"; }
fail() { say "$*"; echo "FAIL: $*"; exit 1; }

cleanup() {
    trap - EXIT INT TERM
    if [ -n "$AGENT_PID" ] && kill -0 "$AGENT_PID" 2>/dev/null; then
        kill -TERM "$AGENT_PID" 2>/dev/null
        for _ in $(seq 50); do kill -0 "$AGENT_PID" 2>/dev/null || break; sleep 0.2; done
        kill -KILL "$AGENT_PID" 2>/dev/null
    fi
    # the agent leaves kernels running when it stops: remove this check's containers
    ids="$(docker ps -aq --filter "label=ai.kernlet.agent-id=$AGENT_ID" 2>/dev/null)"
    [ -n "$ids" ] && docker rm -f $ids >/dev/null 2>&1
    if [ -s "$WORK/agent.log" ] && [ "${1:-0}" != 0 ]; then
        say "agent log (last 30 lines):"; tail -n 30 "$WORK/agent.log"
    fi
    rm -rf "$WORK"
}
trap 'rc=$?; cleanup $rc; exit $rc' EXIT
trap 'say "interrupted or out of time"; echo "FAIL: interrupted or out of time"; exit 124' INT TERM

# -- 1. the host's GPUs --------------------------------------------------------------------------
if command -v nvidia-smi >/dev/null 2>&1; then
    HOST_GPUS="$(timeout 60 nvidia-smi -L)" || fail "nvidia-smi -L failed on the host"
else
    HOST_GPUS="$(timeout 60 python3 - <<'EOF'
import ctypes
nvml = ctypes.CDLL("libnvidia-ml.so.1")
assert nvml.nvmlInit_v2() == 0, "nvmlInit failed"
n = ctypes.c_uint()
assert nvml.nvmlDeviceGetCount_v2(ctypes.byref(n)) == 0
for i in range(n.value):
    h, name = ctypes.c_void_p(), ctypes.create_string_buffer(96)
    nvml.nvmlDeviceGetHandleByIndex_v2(i, ctypes.byref(h))
    nvml.nvmlDeviceGetName(h, name, 96)
    print(f"GPU {i}: {name.value.decode()}")
EOF
)" || fail "no nvidia-smi, and NVML (libnvidia-ml.so.1) does not load on the host"
fi
[ -n "$HOST_GPUS" ] || fail "the host shows no GPU"
say "host GPUs:"; printf '%s\n' "$HOST_GPUS"
ls -l /dev/nvidia* 2>/dev/null | sed 's/^/[gpu-check]   /'
docker info --format 'docker runtimes: {{range $k, $v := .Runtimes}}{{$k}} {{end}}' 2>/dev/null ||
    say "docker does not answer yet"
command -v nvidia-container-runtime-hook >/dev/null && say "the NVIDIA container toolkit's hook is installed"

# -- 2. kernlet, the half stack, the image -------------------------------------------------------
PY="${KERNLET_PY:-}"
if [ -z "$PY" ]; then
    if [ ! -x .venv/bin/python ]; then
        bash scripts/ensure-venv.sh || fail "cannot make .venv"
    fi
    if ! .venv/bin/python -c 'import kernlet, pynvml' 2>/dev/null; then
        say "installing kernlet into .venv"
        timeout 300 .venv/bin/pip install --quiet --disable-pip-version-check -e . nvidia-ml-py ||
            fail "pip install failed (offline? set PIP_FIND_LINKS to a wheel dir, or KERNLET_PY)"
    fi
    PY=.venv/bin/python
fi
"$PY" -c 'import pynvml' 2>/dev/null || fail "$PY lacks pynvml (pip install nvidia-ml-py): the agent could not see the GPUs"
KERNLET=("$PY" -m kernlet.cli)
timeout 300 "${KERNLET[@]}" halfstack up || fail "kernlet halfstack up failed"
if ! docker image inspect "$IMAGE" >/dev/null 2>&1; then
    say "building $IMAGE"
    timeout 400 "${KERNLET[@]}" image build python --tag "$IMAGE" --log-file "$WORK/image.log" ||
        fail "image build failed: $(tail -n 5 "$WORK/image.log" 2>/dev/null)"
fi

# -- 3. an agent of its own ----------------------------------------------------------------------
cat >"$WORK/agent.toml" <<EOF
[agent]
id = "$AGENT_ID"
var-dir = "$WORK/var"
[container]
port-range = [${GPU_CHECK_PORTS:-31500, 31600}]
[resource]
cuda-access = "$ACCESS"
[watcher]
enabled = false
[etcd]
enabled = false
EOF
"${KERNLET[@]}" agent --config "$WORK/agent.toml" >"$WORK/agent.log" 2>&1 &
AGENT_PID=$!
say "agent $AGENT_ID started (pid $AGENT_PID, cuda-access = $ACCESS)"

# -- 4. a kernel with one GPU --------------------------------------------------------------------
AGENT_ID="$AGENT_ID" IMAGE="$IMAGE" timeout 300 "$PY" - <<'EOF'
import asyncio, json, os, subprocess, sys
from kernlet.client import KernletClient
from kernlet.errors import KernletError

INSIDE = r'''
import ctypes, json, os, shutil, subprocess
out = {"CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES"),
       "NVIDIA_VISIBLE_DEVICES": os.environ.get("NVIDIA_VISIBLE_DEVICES")}
try:
    nvml = ctypes.CDLL("libnvidia-ml.so.1")
    out["nvmlInit"] = nvml.nvmlInit_v2()
    n = ctypes.c_uint()
    out["nvmlCount_rc"] = nvml.nvmlDeviceGetCount_v2(ctypes.byref(n))
    out["nvml_count"] = n.value
    names = []  # the GPUs this container can open (device nodes: others may be listed)
    for i in range(n.value):
        h, name = ctypes.c_void_p(), ctypes.create_string_buffer(96)
        if (nvml.nvmlDeviceGetHandleByIndex_v2(i, ctypes.byref(h)) == 0
                and nvml.nvmlDeviceGetName(h, name, 96) == 0):
            names.append(name.value.decode())
    out["nvml_names"] = names
except OSError as exc:
    out["nvml_error"] = str(exc)
smi = shutil.which("nvidia-smi") or "/usr/local/nvidia/bin/nvidia-smi"
try:
    p = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=60)
    out["nvidia_smi"] = (p.stdout + p.stderr).strip()
except OSError as exc:
    out["nvidia_smi_error"] = str(exc)
print("RESULT " + json.dumps(out))
'''

def say(msg):
    print(f"[gpu-check] {msg}", flush=True)

async def main() -> bool:
    agent_id, image = os.environ["AGENT_ID"], os.environ["IMAGE"]
    async with KernletClient("nats://127.0.0.1:4222", agent_id=agent_id) as c:
        for _ in range(120):
            try:
                await c.ping()
                break
            except KernletError:
                await asyncio.sleep(0.5)
        else:
            say("the agent never answered")
            return False
        hw = await c.gather_hwinfo()
        say("agent slots: " + json.dumps(hw["slots"]))
        if "cuda" not in hw["plugins"] or "cuda.device" not in hw["slots"]:
            say("the agent advertises no cuda.device (see its log: NVML, device nodes, toolkit)")
            return False
        say("cuda access: " + json.dumps(hw["plugins"]["cuda"].get("access")))
        k = await c.create_kernel(image, mem=1024**3, slots={"cuda.device": 1})
        say(f"kernel {k['id']} holds {k['devices']}")
        cid = k["container_id"]
        hc = subprocess.run(["docker", "inspect", "-f", "{{json .HostConfig.DeviceRequests}} "
                             "{{json .HostConfig.Devices}}", cid], capture_output=True, text=True)
        say("container DeviceRequests, Devices: " + hc.stdout.strip())
        try:
            lines = []
            res = await c.run(k["id"], INSIDE, on_output=lambda kind, data: lines.append(
                str(data)) if kind in ("stdout", "stderr") else None, timeout=120)
            text = "".join(lines)
            say(f"run: {res['status']} exit {res['exitCode']}")
            print(text, flush=True)
            got = next((json.loads(l[7:]) for l in text.splitlines() if l.startswith("RESULT ")),
                       None)
        finally:
            await c.destroy_kernel(k["id"])
        if got is None:
            return False
        held = k["devices"].get("cuda.device", [])
        ok = (len(got.get("nvml_names") or []) == 1 and len(held) == 1
              and bool(got.get("CUDA_VISIBLE_DEVICES"))
              and got.get("NVIDIA_VISIBLE_DEVICES") == held[0])
        smi = got.get("nvidia_smi", "")
        say(f"inside: NVML lists {got.get('nvml_count')} GPU(s), opens {got.get('nvml_names')}; "
            f"CUDA_VISIBLE_DEVICES={got.get('CUDA_VISIBLE_DEVICES')}; "
            f"nvidia-smi -L: {smi or got.get('nvidia_smi_error') or got.get('nvml_error')}")
        if got.get("nvml_count") == 1 and smi and smi.count("GPU ") != 1:
            ok = False
        return ok

sys.exit(0 if asyncio.run(main()) else 1)
EOF
rc=$?
[ "$rc" = 0 ] || fail "the GPU check through the agent failed (see above; exit $rc)"
echo "PASS: a kernel created with cuda.device = 1 saw exactly one GPU (cuda-access = $ACCESS)"
