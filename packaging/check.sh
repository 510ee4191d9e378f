#!/bin/bash
# Release checks that need no root and no booted systemd:
#
#   1. systemd-analyze security --offline=true: lanchatd.service's exposure <= 1.5;
#   2. python -m build makes an sdist and a wheel that twine check --strict accepts,
#      with the newest setuptools pyproject.toml allows and with the oldest (66, Debian
#      12's), neither with a deprecation warning; the sdist holds every file git holds and
#      a fast part of the test suite passes in it, unpacked; the wheel carries the
#      compiled catalogues and not their .po sources, a license, and a PyPI description
#      without the README's CI markers;
#   3. the wheel, installed with pip in a fresh venv, gives three working commands
#      without systemd: lanchatd starts and says it is ready, lanchatctl reads its
#      status, lanchat finds it by discovery on loopback;
#   4. the manual pages match the commands (docs/man/check-pages.py);
#   5. the Debian packaging's archive standards that need no build: a non-native
#      version, a real maintainer address, Homepage, build-time tests, an autopkgtest,
#      no .po shipped (lintian and the autopkgtest itself run in tests/system/run.sh).
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

# A wheel's file names and its METADATA (zipfile: no unzip needed).
wheel_files() { python3 -c 'import sys, zipfile; print("\n".join(zipfile.ZipFile(sys.argv[1]).namelist()))' "$1"; }
wheel_metadata() {
    python3 -c 'import sys, zipfile; z = zipfile.ZipFile(sys.argv[1])
print(z.read(next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))).decode())' "$1"
}

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
# The newest setuptools (build's isolated environment took it) and the oldest we allow.
if grep -E -i 'deprecat' "$work/build.log"; then
    say "FAIL - the build warns of deprecations (above)"
    fail=1
else
    say "ok - no deprecation warning from $(grep -o -m1 'setuptools[=<>,0-9.]*==[0-9.]*' "$work/build.log" || echo setuptools)"
fi
oldest=$(sed -n 's/.*"setuptools>=\([0-9.]*\),.*/\1/p' "$work/src/pyproject.toml")
python3 -m venv "$work/oldest"
"$work/oldest/bin/pip" install -q --disable-pip-version-check "setuptools==$oldest.*" wheel \
    "tomli>=1.1; python_version < '3.11'"
cp -a "$work/src" "$work/src-oldest"
if (cd "$work/src-oldest" && "$work/oldest/bin/pip" wheel -q --disable-pip-version-check \
        --no-build-isolation --no-deps -w "$work/dist-oldest" .) >"$work/build-oldest.log" 2>&1 \
        && ! grep -E -i 'deprecat' "$work/build-oldest.log" \
        && wheel_metadata "$work"/dist-oldest/*.whl | grep '^License: MIT$' >/dev/null; then
    # (grep reads to the end: with -q it could stop first, and the writer's broken
    # pipe failed the pipeline under pipefail.)
    say "ok - setuptools $oldest builds the wheel too (License: MIT), without deprecations"
else
    cat "$work/build-oldest.log"
    say "FAIL - setuptools $oldest (Debian 12's) cannot build the wheel cleanly (above)"
    fail=1
fi

# The sdist is a source release: every file git holds, and its tests pass from it.
sdist=$(ls "$work"/dist/*.tar.gz)
wheel=$(ls "$work"/dist/*.whl)
missing=$(comm -13 <(tar -tzf "$sdist" | sed 's|^[^/]*/||' | sort) \
    <(cd "$work/src" && find . -type f | sed 's|^\./||' | sort))
if [ -z "$missing" ]; then
    say "ok - the sdist holds every file of the source tree"
else
    say "FAIL - the sdist lacks:"$'\n'"$missing"
    fail=1
fi
mkdir "$work/unpacked"
tar -C "$work/unpacked" -xzf "$sdist"
python3 -m venv "$work/sdist-venv"
"$work/sdist-venv/bin/pip" install -q --disable-pip-version-check "$wheel" 'pytest>=7' 'hypothesis>=6'
# A fast part: the pure units, one daemon over loopback, the admin tool, the packaging.
fast=(tests/test_protocol_chat.py tests/test_core.py tests/test_config.py
      tests/test_daemon_chat.py tests/test_lanchatctl.py tests/test_packaging.py)
if (cd "$work"/unpacked/lanchat-* && "$work/sdist-venv/bin/python" -m pytest -q -x \
        -p no:cacheprovider -m 'not slow' "${fast[@]}") >"$work/sdist-tests.log" 2>&1; then
    say "ok - the unpacked sdist's tests: $(tail -n 1 "$work/sdist-tests.log")"
else
    tail -n 40 "$work/sdist-tests.log"
    say "FAIL - tests from the unpacked sdist (above)"
    fail=1
fi

# What the wheel carries.
listing=$(wheel_files "$wheel")
metadata=$(wheel_metadata "$wheel")
if grep -q '\.mo$' <<<"$listing" && ! grep -q '\.po$' <<<"$listing" \
        && grep -q '^License-Expression: MIT$' <<<"$metadata" \
        && ! grep -q '<!-- ci:' <<<"$metadata" \
        && grep -q '^Project-URL: Source, ' <<<"$metadata"; then
    say "ok - the wheel: catalogues compiled (.mo, no .po), License-Expression, Project-URLs, PyPI description"
else
    say "FAIL - the wheel's contents or metadata:"
    grep -E 'locale' <<<"$listing" || true
    grep -E '^(License|Project-URL)|<!-- ci:' <<<"$metadata" || true
    fail=1
fi

# --- 3. the wheel in a fresh venv ------------------------------------------------------
# With the oldest platformdirs we declare (the test suite runs with the newest).
python3 -m venv "$work/venv"
floor=$(sed -n 's/.*"platformdirs>=\([0-9.]*\)".*/\1/p' "$work/src/pyproject.toml")
"$work/venv/bin/pip" install -q --disable-pip-version-check "$work"/dist/*.whl \
    "platformdirs==$floor.*"
bin=$work/venv/bin
sock=$work/control.sock
printf '[discovery]\ndiscovery_host = "127.0.0.1"\n' >"$work/lanchatd.toml"
# No systemd: the variables it would set must not leak in from a CI service either.
env -u NOTIFY_SOCKET -u LISTEN_FDS -u LISTEN_PID -u RUNTIME_DIRECTORY -u STATE_DIRECTORY \
    -u LOGS_DIRECTORY -u CONFIGURATION_DIRECTORY \
    "$bin/lanchatd" --config "$work/lanchatd.toml" --host 127.0.0.1 --port 0 --discovery-port 0 --http-port 0 \
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
    # The browser client's files are package data: the page and a language catalogue.
    page=$(sed -n 's/.* page=\([^ ]*\).*/\1/p' <<<"$ready")
    served=$("$bin/python" -c 'import sys, urllib.request as u
print(all(b"lanchat" in u.urlopen(sys.argv[1] + p, timeout=10).read()
          for p in ("", "lang/nb.json", "app.js")))' "$page" 2>&1) || true
    if grep -q '^State: *active' <<<"$status" && grep -q 'wheel-check' <<<"$found" \
            && [ "$served" = True ]; then
        say "ok - the wheel in a fresh venv (platformdirs $floor): lanchatd ready, lanchatctl status, lanchat --discover, the web page"
    else
        say "FAIL - the wheel in a fresh venv:"
        say "lanchatctl status: $status"
        say "lanchat --discover: $found"
        say "the web page at $page: $served"
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

# --- 5. the Debian packaging, to the archive's standards (lintian and the autopkgtest
# run in tests/system/run.sh, which needs root; these need nothing) ----------------------
deb=packaging/debian
problems=()
[ "$(cat "$deb/source/format")" = "3.0 (quilt)" ] || problems+=("source format is not 3.0 (quilt)")
head -n 1 "$deb/changelog" | grep -Eq '^lanchat \([0-9][^ ]*-[0-9]+\) ' \
    || problems+=("the changelog version has no Debian revision")
grep -Eq '^Maintainer: [^<]+<[^@>]+@[^>]+>$' "$deb/control" \
    && ! grep -Eq '^Maintainer:.*@(example\.(org|com|net)|localhost)' "$deb/control" \
    || problems+=("Maintainer: is missing or a placeholder")
grep -Eq '^Homepage: https://' "$deb/control" || problems+=("no Homepage:")
grep -Eq '^Tests: ' "$deb/tests/control" 2>/dev/null || problems+=("no autopkgtest in debian/tests")
sed -n '/^override_dh_auto_test:/,/^$/p' "$deb/rules" | grep 'pytest' >/dev/null \
    || problems+=("debian/rules runs no tests at build time")
grep -q '\.po' "$deb"/*.install && problems+=("a .install file ships .po sources")
if [ ${#problems[@]} -eq 0 ]; then
    say "ok - Debian packaging: 3.0 (quilt) with a revision, maintainer, Homepage, build-time tests, autopkgtest"
else
    printf 'FAIL - Debian packaging: %s\n' "${problems[@]}"
    fail=1
fi

# --- 4. manual pages (with the venv, which has the commands' dependencies) -----------
if "$bin/python" "$work/src/docs/man/check-pages.py"; then
    say "ok - manual pages match the commands"
else
    say "FAIL - manual pages (above)"
    fail=1
fi

exit "$fail"
