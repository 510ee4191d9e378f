#!/bin/bash
# Release checks that need no root and no booted systemd:
#
#   1. systemd-analyze security --offline=true: lanchatd.service's exposure <= 1.5;
#   2. python -m build makes an sdist and a wheel that twine check --strict accepts;
#   3. the wheel, installed with pip in a fresh venv, gives three working commands
#      without systemd: lanchatd starts and says it is ready, lanchatctl reads its
#      status, lanchat finds it by discovery on loopback;
#   4. the manual pages match the commands (docs/man/check-pages.py).
#
#   bash packaging/check.sh [--worktree]
#
# The sdist and wheel are built from the last commit, or with --worktree from the
# working tree (see export-tree.sh).
# Uses python3 from PATH for the venvs (build and twine come from PyPI, like pip
# users get them) and installs systemd-analyze with apt-get if missing and root.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
worktree=
if [ "${1:-}" = "--worktree" ]; then
    worktree=--worktree
    shift
fi
[ $# -eq 0 ] || { echo "usage: $0 [--worktree]" >&2; exit 2; }
fail=0
say() { printf '%s\n' "$*"; }
die() { say "packaging/check.sh: $*" >&2; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/lanchat-check.XXXXXX")
daemon_pid=
cleanup() {
    if [ -n "$daemon_pid" ]; then kill "$daemon_pid" 2>/dev/null || true; wait "$daemon_pid" || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

# --- 1. exposure ---------------------------------------------------------------------
if ! command -v systemd-analyze >/dev/null; then
    [ "$(id -u)" -eq 0 ] || die "systemd-analyze is missing (apt-get install systemd)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq systemd >/dev/null
fi
limit=1.5
report=$(systemd-analyze security --offline=true --no-pager systemd/lanchatd.service 2>&1) \
    || die "systemd-analyze security failed:"$'\n'"$report"
exposure=$(sed -n 's/.*Overall exposure level for lanchatd.service: \([0-9.]*\).*/\1/p' <<<"$report")
[ -n "$exposure" ] || die "no exposure level in:"$'\n'"$report"
if awk -v e="$exposure" -v l="$limit" 'BEGIN { exit !(e <= l) }'; then
    say "ok - lanchatd.service exposure $exposure (at most $limit)"
else
    say "FAIL - lanchatd.service exposure $exposure is above $limit:"
    grep '✗' <<<"$report" || true
    fail=1
fi

# --- 2. sdist and wheel ----------------------------------------------------------------
# From what git holds (see export-tree.sh), not from stray build output.
packaging/export-tree.sh $worktree "$work/src"
python3 -m venv "$work/tools"
"$work/tools/bin/pip" install -q --disable-pip-version-check build twine
"$work/tools/bin/python" -m build --outdir "$work/dist" "$work/src" >"$work/build.log" 2>&1 \
    || { cat "$work/build.log"; die "python -m build failed"; }
if "$work/tools/bin/twine" check --strict "$work"/dist/*; then
    say "ok - twine check: $(cd "$work/dist" && echo *)"
else
    say "FAIL - twine check (above)"
    fail=1
fi

# --- 3. the wheel in a fresh venv ------------------------------------------------------
python3 -m venv "$work/venv"
"$work/venv/bin/pip" install -q --disable-pip-version-check "$work"/dist/*.whl
bin=$work/venv/bin
sock=$work/control.sock
printf '[discovery]\ndiscovery_host = "127.0.0.1"\n' >"$work/lanchatd.toml"
# No systemd: the variables it would set must not leak in from a CI service either.
env -u NOTIFY_SOCKET -u LISTEN_FDS -u LISTEN_PID -u RUNTIME_DIRECTORY -u STATE_DIRECTORY \
    -u LOGS_DIRECTORY -u CONFIGURATION_DIRECTORY \
    "$bin/lanchatd" --config "$work/lanchatd.toml" --host 127.0.0.1 --port 0 --discovery-port 0 \
    --control-socket "$sock" --state-dir "$work/state" --log-file "$work/activity.log" \
    --name wheel-check >"$work/daemon.out" 2>"$work/daemon.err" &
daemon_pid=$!
ready=
for _ in $(seq 100); do
    ready=$(grep -m1 '^lanchatd ready ' "$work/daemon.out" || true)
    [ -n "$ready" ] && break
    kill -0 "$daemon_pid" 2>/dev/null || break
    sleep 0.1
done
if [ -z "$ready" ]; then
    say "FAIL - lanchatd from the wheel did not get ready:"
    cat "$work/daemon.err"
    fail=1
else
    udp_port=$(sed -n 's/.* udp=[^ ]*:\([0-9]*\).*/\1/p' <<<"$ready")
    status=$("$bin/lanchatctl" --socket "$sock" status 2>&1) || true
    found=$("$bin/lanchat" --discover --discovery-address 127.0.0.1 \
        --discovery-port "$udp_port" 2>&1) || true
    if grep -q '^State: *active' <<<"$status" && grep -q 'wheel-check' <<<"$found"; then
        say "ok - the wheel in a fresh venv: lanchatd ready, lanchatctl status, lanchat --discover"
    else
        say "FAIL - the wheel in a fresh venv:"
        say "lanchatctl status: $status"
        say "lanchat --discover: $found"
        fail=1
    fi
    kill -TERM "$daemon_pid"
    if wait "$daemon_pid"; then
        daemon_pid=
    else
        say "FAIL - lanchatd from the wheel did not exit 0 on SIGTERM"
        daemon_pid=
        fail=1
    fi
fi

# --- 4. manual pages (with the venv, which has the commands' dependencies) -----------
if "$bin/python" "$work/src/docs/man/check-pages.py"; then
    say "ok - manual pages match the commands"
else
    say "FAIL - manual pages (above)"
    fail=1
fi

exit "$fail"
