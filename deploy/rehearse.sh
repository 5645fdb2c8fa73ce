#!/usr/bin/env bash
# Rehearse the deployment on one machine: every service in its own Linux network namespace.
#
#   sudo deploy/rehearse.sh            (or: make rehearse; tests/test_deploy.py runs it too)
#
# Five namespaces joined by veth links to a bridge, each with its own 10.x address: a Dask scheduler,
# two Dask workers, a Prefect server and a Prefect worker (process work pool).  The scheduler, the
# workers and the server run the containers' own args and env from deploy/k8s/ (deploy/podcmd.py),
# with only the pod IP, names, certificate folder and API URL replaced.  All Dask traffic (flow run
# <-> scheduler <-> workers) is TLS with a CA and a certificate made here with openssl.
#
# It deploys the clustering flow (deploy/prefect.yaml, deployment clustering-rehearsal) and runs it
# through the Prefect worker on a Zarr store made with `kmeans-dist ingest`:
#   1. uninterrupted: the run must complete (its centers are the reference);
#   2. mid-fit, one Dask worker's link is cut (`ip link set ... down`): the run must complete with
#      centers bit-identical to run 1;
#   3. mid-fit, the Prefect server is stopped and started again: the run must complete (or, if it
#      does not, a new run of the same parameters must resume from the checkpoints and complete),
#      with the same centers.
# Throughout, `ss -ltnup` inside each namespace and on the host must show nothing of it listening
# outside the namespaces' own addresses.  A trap removes everything it started (processes by PID,
# namespaces, links, the temporary folder).  Exit 0 only if all of this held; the last line printed
# is one summary line.  Set REHEARSE_KEEP=1 to keep the temporary folder (logs) afterwards.
set -euo pipefail

T0=$SECONDS
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=${PY:-$ROOT/.venv/bin/python}
VENV_BIN=$(dirname "$PY")
SUMMARY=""
FAIL=""
N_LISTEN=0
MAX_LOOP=0

if [[ $EUID -ne 0 ]]; then
    echo "REHEARSAL FAILED: run as root (it creates network namespaces)"
    exit 2
fi
for tool in ip ss openssl curl; do
    command -v "$tool" >/dev/null || { echo "REHEARSAL FAILED: $tool is not installed"; exit 2; }
done

SUF=$(od -An -N4 -tx1 /dev/urandom | tr -d ' \n')
WORK=$(mktemp -d "/tmp/kmeans-rehearse-$SUF.XXXX")
mkdir -p "$WORK/logs" "$WORK/tls" "$WORK/runs"
BR="kbr$SUF"
ROLES=(sched w1 w2 pserver pworker)
declare -A NS IP VETH PIDS
while :; do  # a free 10.A.B.0/24
    NET="10.$((RANDOM % 200 + 50)).$((RANDOM % 250 + 1))"
    ip -4 addr | grep -q " $NET\." || ip -4 route | grep -q "^$NET\." || break
done

log() { printf '[%3ds] %s\n' "$((SECONDS - T0))" "$*" >&2; }
fail() { FAIL="$*"; exit 1; }

descendants() {  # PIDs of the process tree under $1 (children first)
    local c
    for c in $(ps -o pid= --ppid "$1" 2>/dev/null); do
        descendants "$c"
        echo "$c"
    done
}

stop_pid() {  # stop the process $1 and everything under it, by PID
    local p tree
    tree="$(descendants "$1") $1"
    for p in $tree; do kill -TERM "$p" 2>/dev/null || true; done
    for _ in $(seq 50); do
        local alive=0
        for p in $tree; do kill -0 "$p" 2>/dev/null && alive=1; done
        [[ $alive -eq 0 ]] && return 0
        sleep 0.1
    done
    for p in $tree; do kill -KILL "$p" 2>/dev/null || true; done
}

cleanup() {
    local rc=$?
    set +e
    trap - EXIT INT TERM
    for name in "${!PIDS[@]}"; do stop_pid "${PIDS[$name]}"; done
    for r in "${ROLES[@]}"; do
        [[ -n "${NS[$r]:-}" ]] || continue
        for p in $(ip netns pids "${NS[$r]}" 2>/dev/null); do kill -KILL "$p" 2>/dev/null; done
        ip netns del "${NS[$r]}" 2>/dev/null
        ip link del "${VETH[$r]}" 2>/dev/null
    done
    ip link del "$BR" 2>/dev/null
    if [[ -n "$FAIL" || $rc -ne 0 ]]; then
        for f in "$WORK"/logs/*.log; do
            [[ -f "$f" ]] && { echo "---- $(basename "$f") (last lines)"; tail -n 15 "$f"; } >&2
        done
    fi
    left=$(ip netns list | grep -c "kd$SUF" || true)
    [[ "${REHEARSE_KEEP:-0}" == 1 ]] && echo "logs kept in $WORK" >&2 || rm -rf "$WORK"
    if [[ -z "$FAIL" && $rc -eq 0 && "$left" -eq 0 && -n "$SUMMARY" ]]; then
        echo "REHEARSAL OK: $SUMMARY; cleaned up; $((SECONDS - T0)) s"
        exit 0
    fi
    [[ "$left" -ne 0 ]] && FAIL="${FAIL:+$FAIL; }$left namespaces left behind"
    echo "REHEARSAL FAILED: ${FAIL:-exit status $rc}; $((SECONDS - T0)) s"
    exit 1
}
trap cleanup EXIT
trap 'FAIL="interrupted"; exit 1' INT TERM

# ---------------------------------------------------------------------------------------------
# network: a bridge, one namespace per service joined to it by a veth link
# ---------------------------------------------------------------------------------------------
ip link add "$BR" type bridge
ip addr add "$NET.1/24" dev "$BR"
ip link set "$BR" up
i=1
for r in "${ROLES[@]}"; do
    i=$((i + 1))
    NS[$r]="kd$SUF-$r"
    IP[$r]="$NET.$i"
    VETH[$r]="kv$SUF$i"
    ip netns add "${NS[$r]}"
    ip link add "${VETH[$r]}" type veth peer name "kp$SUF$i"
    ip link set "kp$SUF$i" netns "${NS[$r]}"
    ip -n "${NS[$r]}" link set "kp$SUF$i" name eth0
    ip -n "${NS[$r]}" addr add "${IP[$r]}/24" dev eth0
    ip -n "${NS[$r]}" link set eth0 up
    ip -n "${NS[$r]}" link set lo up
    ip link set "${VETH[$r]}" master "$BR"
    ip link set "${VETH[$r]}" up
done
log "namespaces on $NET.0/24: $(for r in "${ROLES[@]}"; do printf '%s=%s ' "$r" "${IP[$r]}"; done)"

# ---------------------------------------------------------------------------------------------
# TLS: a CA and one certificate (server and client use) for every Dask endpoint
# ---------------------------------------------------------------------------------------------
(
    cd "$WORK/tls"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
        -subj "/CN=kmeans-rehearsal-ca" -keyout ca.key -out ca.crt \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=kmeans-dask" \
        -keyout tls.key -out tls.csr
    san="DNS:kmeans-scheduler.kmeans.svc.cluster.local"
    for r in "${ROLES[@]}"; do san="$san,IP:${IP[$r]}"; done
    printf 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=%s\n' \
        "$san" > ext.cnf
    openssl x509 -req -in tls.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 -extfile ext.cnf -out tls.crt
    chmod 600 ca.key tls.key
) >"$WORK/logs/openssl.log" 2>&1 || fail "openssl could not make the certificates"

# ---------------------------------------------------------------------------------------------
# environment shared by every process (each gets its own overrides below)
# ---------------------------------------------------------------------------------------------
export PATH="$VENV_BIN:$PATH"
export KMEANS_DIST_ROOT="$ROOT"
export PREFECT_HOME="$WORK/prefect-client"
export PREFECT_API_URL="http://${IP[pserver]}:4200/api"
export PREFECT_SERVER_ANALYTICS_ENABLED=false
export PREFECT_LOGGING_TO_API_BATCH_INTERVAL=0.3
export MPLBACKEND=Agg
export DASK_LOGGING__DISTRIBUTED=info
unset DASK_SCHEDULER_ADDRESS PREFECT_PROFILE 2>/dev/null || true
DASK_ADDRESS="tls://${IP[sched]}:8786"
MANIFEST="$ROOT/deploy/k8s/dask-cluster.yaml"
PODCMD=("$PY" "$ROOT/deploy/podcmd.py")
HELP=("$PY" "$ROOT/deploy/rehearsal.py")

start() {  # start NAME ROLE CMD...: run CMD in ROLE's namespace, log to logs/NAME.log
    local name=$1 role=$2
    shift 2
    ip netns exec "${NS[$role]}" "$@" >"$WORK/logs/$name.log" 2>&1 &
    PIDS[$name]=$!
}

start_server() {
    start pserver pserver "${PODCMD[@]}" "$ROOT/deploy/k8s/prefect-server.yaml" Deployment/prefect-server \
        prefect-server --set "POD_IP=${IP[pserver]}" --set "PREFECT_HOME=$WORK/prefect-server" \
        --set "PREFECT_UI_API_URL=$PREFECT_API_URL"
}

wait_listen() {  # wait_listen ROLE PORT SECONDS
    local end=$((SECONDS + $3))
    while ((SECONDS < end)); do
        ip netns exec "${NS[$1]}" ss -ltnH "sport = :$2" | grep -q . && return 0
        sleep 0.5
    done
    return 1
}

# ---------------------------------------------------------------------------------------------
# services
# ---------------------------------------------------------------------------------------------
start_server
start sched sched "${PODCMD[@]}" "$MANIFEST" DaskCluster/kmeans scheduler \
    --set "POD_IP=${IP[sched]}" --set "DASK_TLS_DIR=$WORK/tls"
for w in w1 w2; do
    start "$w" "$w" "${PODCMD[@]}" "$MANIFEST" DaskCluster/kmeans worker \
        --set "POD_IP=${IP[$w]}" --set "DASK_WORKER_NAME=$w" --set "DASK_SCHEDULER_TLS=$DASK_ADDRESS" \
        --set "DASK_TLS_DIR=$WORK/tls" --set "PREFECT_API_URL=$PREFECT_API_URL" \
        --set "PREFECT_HOME=$WORK/prefect-$w"
done

# the data: 20,000 x 8 uniform samples (many Lloyd iterations: time to cut a link mid-fit)
"$PY" -c "import numpy as np; np.save('$WORK/x.npy', np.random.default_rng(0).random((20000, 8)))"
STORE="$WORK/uniform.zarr"
"$VENV_BIN/kmeans-dist" ingest "$WORK/x.npy" "$STORE" --chunk-rows 2500 >"$WORK/logs/ingest.log" 2>&1 \
    || fail "kmeans-dist ingest failed"

"${HELP[@]}" health "$PREFECT_API_URL" 150 || fail "the Prefect server did not start"
wait_listen sched 8786 60 || fail "the Dask scheduler did not start"
log "Prefect server at $PREFECT_API_URL; Dask scheduler at $DASK_ADDRESS"
# the scheduler speaks TLS with the certificate made above, and only with a client certificate
echo | openssl s_client -connect "${IP[sched]}:8786" -CAfile "$WORK/tls/ca.crt" -cert "$WORK/tls/tls.crt" \
    -key "$WORK/tls/tls.key" -verify_return_error >"$WORK/logs/tls-check.log" 2>&1 \
    || fail "no verified TLS handshake with the scheduler"
grep -q "Verify return code: 0 (ok)" "$WORK/logs/tls-check.log" || fail "the scheduler's certificate does not verify"

prefect work-pool create kmeans-rehearsal --type process >"$WORK/logs/pool.log" 2>&1 \
    || fail "could not create the work pool"
# the Prefect worker and its flow runs: Dask clients with the job template's TLS settings
start pworker pworker env "PREFECT_HOME=$WORK/prefect-pworker" \
    DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION=True \
    "DASK_DISTRIBUTED__COMM__TLS__CA_FILE=$WORK/tls/ca.crt" \
    "DASK_DISTRIBUTED__COMM__TLS__CLIENT__CERT=$WORK/tls/tls.crt" \
    "DASK_DISTRIBUTED__COMM__TLS__CLIENT__KEY=$WORK/tls/tls.key" \
    DASK_DISTRIBUTED__COMM__TIMEOUTS__TCP=15s \
    prefect worker start --pool kmeans-rehearsal --type process --name rehearsal-worker

(cd "$ROOT" && prefect --no-prompt deploy --prefect-file deploy/prefect.yaml --name clustering-rehearsal) \
    >"$WORK/logs/deploy.log" 2>&1 || fail "prefect deploy failed"
log "deployed clustering_flow/clustering-rehearsal; Prefect worker started"

n_workers() {  # Dask workers connected, from the scheduler's log
    grep -c "Register worker" "$WORK/logs/sched.log" || true
}
end=$((SECONDS + 90))
while [[ $(n_workers) -lt 2 ]]; do
    ((SECONDS < end)) || fail "the Dask workers did not register with the scheduler"
    sleep 0.5
done
log "2 Dask workers registered over TLS"

# ---------------------------------------------------------------------------------------------
# checks
# ---------------------------------------------------------------------------------------------
check_listeners() {  # nothing listens outside the namespaces' own addresses
    local r line addr bad=""
    N_LOOP=0
    for r in "${ROLES[@]}"; do
        while read -r line; do
            [[ -n "$line" ]] || continue
            addr=$(awk '{print $5}' <<<"$line")
            addr=${addr%:*}
            addr=${addr#[}
            addr=${addr%]}
            addr=${addr%%%*}
            # the namespace's own address, or its own loopback (reachable from no other namespace)
            case "$addr" in
                "${IP[$r]}") ;;
                127.*|::1) N_LOOP=$((N_LOOP + 1)) ;;
                *) bad="$bad [$r: $(awk '{print $1, $5, $7}' <<<"$line")]" ;;
            esac
        done < <(ip netns exec "${NS[$r]}" ss -ltunpH)
    done
    # on the host: no listener on the bridge's network, none of the processes started here
    local ours=" $(for p in "${PIDS[@]}"; do echo "$p $(descendants "$p")"; done | tr '\n' ' ') "
    while read -r line; do
        [[ -n "$line" ]] || continue
        addr=$(awk '{print $5}' <<<"$line")
        [[ "$addr" == "$NET".* ]] && bad="$bad [host: $addr]"
        for p in $(grep -o 'pid=[0-9]*' <<<"$line" | cut -d= -f2); do
            [[ "$ours" == *" $p "* ]] && bad="$bad [host: $(awk '{print $1, $5, $7}' <<<"$line")]"
        done
    done < <(ss -ltunpH)
    [[ -z "$bad" ]] || fail "listening outside the namespaces' addresses:$bad"
    local n
    n=$(for r in "${ROLES[@]}"; do ip netns exec "${NS[$r]}" ss -ltunH; done | grep -c . || true)
    ((n > N_LISTEN)) && N_LISTEN=$n
    ((N_LOOP > MAX_LOOP)) && MAX_LOOP=$N_LOOP
    log "listeners: $n in the namespaces ($N_LOOP on a namespace's loopback), none outside"
}

PARAMS_BASE="\"source\": \"$STORE\", \"k\": 32, \"init\": \"k-means++\", \"tol\": 0.0, \"max_iter\": 300,
 \"silhouette_sample\": 1000, \"dask_address\": \"$DASK_ADDRESS\""
trigger() {  # trigger NAME: a run of the deployment writing under runs/NAME
    "${HELP[@]}" trigger clustering_flow/clustering-rehearsal "{$PARAMS_BASE, \"output_dir\": \"$WORK/runs/$1\"}" \
        2>>"$WORK/logs/trigger.log"
}
fitdir() { echo "$WORK/runs/$1/*/fits/fit-0"; }
wait_iteration() {  # wait_iteration NAME ITER SECONDS ID [allow-done]: until the fit checkpointed ITER
    "${HELP[@]}" until "$2" "$(fitdir "$1")" "$3" "$4" "${5:-}" 2>>"$WORK/logs/wait.log"
}
wait_run() {  # wait_run ID SECONDS -> state name
    "${HELP[@]}" wait "$1" "$2" 2>>"$WORK/logs/wait.log" || true
}

# 1. uninterrupted run: the reference
id=$(trigger ref) || fail "could not trigger run 1"
out=$(wait_iteration ref 3 150 "$id" allow-done) || fail "run 1: $out"
check_listeners  # every service and the flow run are up
state=$(wait_run "$id" 240)
[[ "$state" == Completed ]] || fail "run 1 (uninterrupted) ended $state"
REF=$(echo $(fitdir ref)/fit.npz)
[[ -f "$REF" ]] || fail "run 1 wrote no fit"
read -r ref_info < <("${HELP[@]}" info "$REF")
log "run 1 completed: $ref_info"

# 2. cut the link of the Dask worker that does not run the fit task, mid-fit
id=$(trigger cut) || fail "could not trigger run 2"
out=$(wait_iteration cut 3 150 "$id") || fail "run 2: $out"
read -r cut_it pid <<<"$out"
task_ns=$(ip netns identify "$pid" 2>/dev/null || true)
victim=w2
[[ "$task_ns" == "${NS[w2]}" ]] && victim=w1
ip link set "${VETH[$victim]}" down
log "run 2: cut $victim's link (${VETH[$victim]}) at iteration $cut_it (the fit task runs in ${task_ns:-?})"
check_listeners  # with the flow run and the fit going
state=$(wait_run "$id" 300)
[[ "$state" == Completed ]] || fail "run 2 (worker $victim cut) ended $state"
CUT=$(echo $(fitdir cut)/fit.npz)
read -r cut_info < <("${HELP[@]}" info "$CUT")
grep -q "Remove worker.*${IP[$victim]}" "$WORK/logs/sched.log" \
    || fail "run 2: the scheduler never removed the cut worker $victim"
"${HELP[@]}" same "$REF" "$CUT" >"$WORK/logs/same-cut.log" || fail "run 2: centers differ from run 1"
log "run 2 completed after the cut ($cut_info); centers bit-identical to run 1"

# 3. restart the Prefect server mid-fit
id=$(trigger restart) || fail "could not trigger run 3"
out=$(wait_iteration restart 3 150 "$id") || fail "run 3: $out"
read -r rs_it _ <<<"$out"
stop_pid "${PIDS[pserver]}"
mv "$WORK/logs/pserver.log" "$WORK/logs/pserver-1.log"
log "run 3: Prefect server stopped at iteration $rs_it"
start_server
"${HELP[@]}" health "$PREFECT_API_URL" 150 || fail "the Prefect server did not start again"
log "run 3: Prefect server back"
state=$(wait_run "$id" 300)
outcome="completed"
if [[ "$state" != Completed ]]; then
    log "run 3 ended $state: running it again, which must resume"
    id=$(trigger restart) || fail "could not trigger run 3 again"
    state=$(wait_run "$id" 300)
    [[ "$state" == Completed ]] || fail "run 3 (Prefect server restarted) ended $state, and again when re-run"
    outcome="resumed after $state"
fi
RS=$(echo $(fitdir restart)/fit.npz)
"${HELP[@]}" same "$REF" "$RS" >"$WORK/logs/same-restart.log" || fail "run 3: centers differ from run 1"
log "run 3 $outcome; centers bit-identical to run 1"

check_listeners
SUMMARY="5 namespaces on $NET.0/24, Dask over TLS; run 1 completed (${ref_info%% *});"
SUMMARY="$SUMMARY worker $victim cut at iteration $cut_it: completed, centers bit-identical;"
SUMMARY="$SUMMARY Prefect server restarted at iteration $rs_it: run $outcome, centers bit-identical;"
SUMMARY="$SUMMARY up to $N_LISTEN listeners, all on the namespaces' own addresses ($MAX_LOOP on their loopback)"
