#!/bin/bash
# The system test: build the .debs, boot systemd in a throwaway machine (namespaces and
# an overlay of /, see machine.py), install the packages there and check the service
# as an administrator would (systest.py).
#
#   bash tests/system/run.sh [--worktree]
#
# Needs root on a Linux host with overlayfs, cgroup v2 and namespaces (any Debian 12
# machine or VM).  Installs what it needs with apt-get.  Never skips: if the machine
# cannot be made, that is a failure (exit status 2); failed checks give exit status 1.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
die() { echo "tests/system/run.sh: $*" >&2; exit 2; }

worktree=
if [ "${1:-}" = "--worktree" ]; then
    worktree=--worktree  # build from uncommitted changes too (see packaging/export-tree.sh)
    shift
fi
[ $# -eq 0 ] || die "usage: $0 [--worktree]"
[ "$(id -u)" -eq 0 ] || die "must run as root (it boots systemd in new namespaces)"

install_missing() {  # the Debian packages named, those not installed yet
    local missing=() pkg status
    for pkg in "$@"; do
        status=$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)
        [ "$status" = installed ] || missing+=("$pkg")
    done
    [ ${#missing[@]} -gt 0 ] || return 0
    echo "tests/system/run.sh: installing ${missing[*]}" >&2
    apt-get update -qq || die "apt-get update failed"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >/dev/null || die "could not install ${missing[*]}"
}

# What the machine needs besides the build dependencies (packaging/build-debs.sh
# installs those): systemd to boot, util-linux for unshare/nsenter/setpriv, iproute2
# and procps for the checks, passwd for test users; and below, once they are built,
# the lanchat packages' own dependencies, because the machine's root is an overlay of
# this host's /.
install_missing systemd util-linux iproute2 procps passwd python3

work=$(mktemp -d /var/tmp/lanchat-systest.XXXXXX)
cleanup() { rm -rf "$work"; }
trap cleanup EXIT

"$repo/packaging/build-debs.sh" $worktree "$work/debs" >"$work/build-debs.log" 2>&1 || {
    cat "$work/build-debs.log" >&2
    die "building the packages failed"
}
echo "ok - built $(cd "$work/debs" && echo *.deb)"

# The packages' Depends as built (the first of each set of alternatives, the lanchat
# packages themselves left out): what dpkg -i in the machine will ask for.
mapfile -t depends < <(
    for deb in "$work"/debs/*.deb; do dpkg-deb -f "$deb" Depends; echo; done \
    | tr ',' '\n' | sed -E 's/\|.*//; s/\([^)]*\)//g; s/^[[:space:]]+//; s/[[:space:]]+$//; s/:any$//' \
    | grep -v -x -e '' -e lanchat -e lanchatd | sort -u)
install_missing "${depends[@]}"

# The system's Python, not one a virtualenv or pyenv put first in PATH.
status=0
/usr/bin/python3 "$repo/tests/system/systest.py" "$work/debs" "$work" || status=$?
exit "$status"
