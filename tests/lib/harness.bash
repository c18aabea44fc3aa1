# Shared by tests/systemd and tests/deb (sourced, not run): PASS/FAIL/SKIP
# lines and their tally, installing Debian packages on demand, and a
# throwaway systemd booted with systemd-nspawn from the host's own /usr.
# shellcheck shell=bash disable=SC2034
# (SC2034: PASSED, CONTAINER_WHY and the like are read by the scripts.)

PASSED=0 FAILED=0 SKIPPED=0

pass() { PASSED=$((PASSED + 1)); printf 'PASS %s\n' "$*"; }
fail() { FAILED=$((FAILED + 1)); printf 'FAIL %s\n' "$*"; }
skip() { SKIPPED=$((SKIPPED + 1)); printf 'SKIP %s\n' "$*"; }
note() { printf '     %s\n' "$@"; }
step() { printf '\n== %s\n' "$*"; }

# check NAME COMMAND...: PASS when the command succeeds, else FAIL with its
# output indented below.
check() {
    local name=$1 out
    shift
    if out=$("$@" 2>&1); then
        pass "$name"
    else
        fail "$name"
        [ -z "$out" ] || printf '%s\n' "$out" | sed 's/^/     | /' | tail -n 30
    fi
}

# The closing line test runners are read by: "<what>: N passed, N failed, N skipped".
summary() {
    printf '\n%s: %d passed, %d failed, %d skipped\n' "$1" "$PASSED" "$FAILED" "$SKIPPED"
    [ "$FAILED" -eq 0 ]
}

# wait_until SECONDS COMMAND...: retries the command every 0.2 s until it
# succeeds (0) or the time is up (1).
wait_until() {
    local deadline=$((SECONDS + $1))
    shift
    until "$@" >/dev/null 2>&1; do
        [ "$SECONDS" -lt "$deadline" ] || return 1
        sleep 0.2
    done
}

# ensure_packages COMMAND:PACKAGE...: installs the Debian packages whose
# command is missing; `apt-get update` runs only when apt knows no candidate.
ensure_packages() {
    local pair missing=()
    for pair in "$@"; do
        command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
    done
    [ ${#missing[@]} -gt 0 ] || return 0
    [ "$(id -u)" -eq 0 ] || { echo "need root to install: ${missing[*]}" >&2; return 1; }
    command -v apt-get >/dev/null || { echo "no apt-get to install: ${missing[*]}" >&2; return 1; }
    local pkg
    for pkg in "${missing[@]}"; do
        if ! apt-cache policy "$pkg" 2>/dev/null | grep 'Candidate: [^(]' >/dev/null; then
            DEBIAN_FRONTEND=noninteractive timeout 300 apt-get update -qq >/dev/null || true
            break
        fi
    done
    DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >/dev/null
}

# ---------------------------------------------------------------------------
# A container: systemd-nspawn --volatile=yes -D / boots the host's own /usr
# (read-only) with an empty tmpfs for everything else, and --private-network
# gives it only a loopback of its own. Extra nspawn arguments (overlays with
# the files under test) come from the caller. Commands run inside with
# nsenter, so neither the host nor the container needs systemd-machined.

CONTAINER_NSPAWN_PID='' CONTAINER_LEADER='' CONTAINER_WHY=''

# Services the host may have (the cluster tests install them) that would
# start in the container, which shares the host's /usr and unit files, and
# hold up or fail its boot: masked there.
CONTAINER_MASKS=(systemd.mask=redis-server.service systemd.mask=nginx.service
    systemd.mask=haproxy.service)

# container_boot NAME LOGFILE [NSPAWN ARGS...]: boots and waits (at most 60 s)
# until its systemd finished starting up; CONTAINER_WHY says why when it
# fails. Returns 1 when this machine cannot boot a container at all (not
# root, no systemd-nspawn, a sandbox without the namespaces or cgroups it
# needs): then a bare container (no extra arguments) fails too, nothing under
# test being started at boot. Returns 2 when a bare container boots but one
# with the caller's arguments does not: a fault of the test or of what it
# adds, never a reason to skip.
container_boot() {
    local name=$1 log=$2
    shift 2
    container_start "$name" "$log" "$@" && return 0
    [ $# -gt 0 ] || return 1
    local why=$CONTAINER_WHY
    if container_start "$name-probe" "$log.probe"; then
        container_stop
        CONTAINER_WHY="a bare container boots, but not with $*: $why"
        return 2
    fi
    return 1
}

container_start() {
    local name=$1 log=$2
    shift 2
    CONTAINER_WHY=''
    if [ "$(id -u)" -ne 0 ]; then
        CONTAINER_WHY="not root: systemd-nspawn needs root"
        return 1
    fi
    if ! command -v systemd-nspawn >/dev/null; then
        CONTAINER_WHY="systemd-nspawn is not installed (package systemd-container)"
        return 1
    fi
    local host=()
    # Without systemd on the host (a container or VM whose PID 1 is something
    # else) there is no machined to register with and no manager to create
    # a scope: nspawn then keeps its own cgroup.
    [ -d /run/systemd/system ] || host=(--register=no --keep-unit)
    # The container gets the unified cgroup v2 hierarchy, as Debian 12 and
    # Raspberry Pi OS boot with (the host may be hybrid).
    SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=${SYSTEMD_NSPAWN_UNIFIED_HIERARCHY:-1} \
        systemd-nspawn --quiet --volatile=yes --directory=/ --private-network \
            --machine="$name" "${host[@]}" --console=read-only "$@" \
            --boot -- systemd.mask=systemd-firstboot.service "${CONTAINER_MASKS[@]}" systemd.log_color=0 \
            >"$log" 2>&1 </dev/null &
    CONTAINER_NSPAWN_PID=$!
    local deadline=$((SECONDS + 60)) state=''
    while [ "$SECONDS" -lt "$deadline" ]; do
        if ! kill -0 "$CONTAINER_NSPAWN_PID" 2>/dev/null; then
            CONTAINER_WHY="systemd-nspawn exited: $(grep -v '^$' "$log" | tail -n 3 | tr '\n' ' ')"
            CONTAINER_NSPAWN_PID=''
            return 1
        fi
        # The container's PID 1: the child of nspawn that has executed
        # systemd (nspawn's short-lived intermediate children are still
        # called systemd-nspawn).
        if [ -z "$CONTAINER_LEADER" ] || ! kill -0 "$CONTAINER_LEADER" 2>/dev/null; then
            CONTAINER_LEADER=''
            local child
            for child in $(pgrep -P "$CONTAINER_NSPAWN_PID" || true); do
                [ "$(cat "/proc/$child/comm" 2>/dev/null)" = systemd ] && CONTAINER_LEADER=$child
            done
        fi
        if [ -n "$CONTAINER_LEADER" ]; then
            state=$(in_container systemctl is-system-running 2>/dev/null || true)
            case $state in
                running | degraded) return 0 ;;
            esac
        fi
        sleep 0.3
    done
    CONTAINER_WHY="its systemd did not finish booting within 60 s (state '${state:-unknown}'): $(tail -n 3 "$log" | tr '\n' ' ')"
    container_stop
    return 1
}

# in_container COMMAND...: runs a command inside, with a clean environment,
# for at most IN_CONTAINER_TIMEOUT (20) seconds.
in_container() {
    timeout "${IN_CONTAINER_TIMEOUT:-20}" nsenter --target "$CONTAINER_LEADER" --all -- \
        env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 SYSTEMD_PAGER= SYSTEMD_COLORS=0 \
        "$@"
}

# container_stop: powers it off (at most 20 s), then kills what is left.
container_stop() {
    [ -n "$CONTAINER_NSPAWN_PID" ] || return 0
    if kill -0 "$CONTAINER_NSPAWN_PID" 2>/dev/null; then
        [ -z "$CONTAINER_LEADER" ] || IN_CONTAINER_TIMEOUT=5 in_container systemctl --no-block poweroff >/dev/null 2>&1 || true
        wait_until 15 eval "! kill -0 $CONTAINER_NSPAWN_PID" ||
            kill -TERM "$CONTAINER_NSPAWN_PID" 2>/dev/null || true
        wait_until 5 eval "! kill -0 $CONTAINER_NSPAWN_PID" ||
            kill -KILL "$CONTAINER_NSPAWN_PID" 2>/dev/null || true
    fi
    wait "$CONTAINER_NSPAWN_PID" 2>/dev/null || true
    CONTAINER_NSPAWN_PID='' CONTAINER_LEADER=''
}

# http_get PORT PATH: an HTTP/1.0 GET to 127.0.0.1:PORT inside the container,
# with bash's /dev/tcp (no curl needed); prints the response.
http_get() {
    # shellcheck disable=SC2016
    IN_CONTAINER_TIMEOUT=10 in_container bash -c '
        exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
        printf "GET %s HTTP/1.0\r\nHost: localhost\r\n\r\n" "$2" >&3
        cat <&3' http_get "$1" "$2"
}

# unit_prop UNIT PROPERTY: one property's value, from systemctl show.
unit_prop() {
    in_container systemctl show --property="$2" --value "$1"
}
