#!/bin/bash
# Build the lanchat and lanchatd Debian packages from this tree into OUTDIR, then run
# lintian on them and fail on any error or warning.
#
#   packaging/build-debs.sh [--worktree] OUTDIR
#
# The package is built in a fresh copy of the last commit (with --worktree: of the
# working tree, uncommitted changes and new files included; see export-tree.sh), with
# packaging/debian as its debian/ directory, so nothing is written into the working
# tree.  The version comes from lanchat/__init__.py.  Missing build dependencies
# are installed with apt-get when run as root; otherwise the script names them.
#
# OUTDIR receives lanchat_VERSION-REV_all.deb, lanchatd_VERSION-REV_all.deb, the
# source package (.dsc, .orig.tar.xz, .debian.tar.xz), .buildinfo, .changes and
# lintian.txt.
set -euo pipefail

die() { echo "build-debs: $*" >&2; exit 1; }

worktree=
if [ "${1:-}" = "--worktree" ]; then
    worktree=--worktree
    shift
fi
[ $# -eq 1 ] || die "usage: $0 [--worktree] OUTDIR"
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
mkdir -p "$1"
out=$(cd "$1" && pwd)

# The build dependencies are debian/control's Build-Depends (read from there, the one
# place they are written: version bounds, profiles and debhelper-compat's own name
# taken off), and the tools this script runs.
mapfile -t build_deps < <(
    awk '/^Build-Depends:/ { f = 1; sub(/^Build-Depends:/, ""); print; next }
         f && /^[A-Za-z-]+:/ { exit }
         f { print }' "$repo/packaging/debian/control" \
    | tr ',' '\n' \
    | sed -E 's/\([^)]*\)//g; s/<[^>]*>//g; s/\[[^]]*\]//g; s/^[[:space:]]+//; s/[[:space:]]+$//' \
    | sed 's/^debhelper-compat$/debhelper/' | grep -v '^$')
[ ${#build_deps[@]} -gt 3 ] || die "no Build-Depends read from packaging/debian/control"
build_deps+=(dpkg-dev lintian git)
missing=()
for pkg in "${build_deps[@]}"; do
    status=$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)
    [ "$status" = installed ] || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        die "missing build dependencies (install them as root): ${missing[*]}"
    fi
    echo "build-debs: installing ${missing[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >/dev/null
fi

version=$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' "$repo/lanchat/__init__.py")
[ -n "$version" ] || die "no __version__ in lanchat/__init__.py"
deb_version=$(dpkg-parsechangelog -l "$repo/packaging/debian/changelog" -S Version)
# Not a native package: the Debian version is the project's version and a Debian
# revision (0.1.0-1), so that a packaging fix is a new revision of the same release.
[ "${deb_version%-*}" = "$version" ] && [ "${deb_version##*-}" != "$deb_version" ] \
    || die "packaging/debian/changelog is at $deb_version but lanchat/__init__.py says" \
    "$version: add a changelog entry (dch -v $version-1)"

work=$(mktemp -d "${TMPDIR:-/tmp}/lanchat-debs.XXXXXX")
trap 'rm -rf "$work"' EXIT
src="$work/lanchat-$version"
mkdir "$src"
"$repo/packaging/export-tree.sh" $worktree "$src"
# The upstream tarball is the release's source tree, as git holds it; the Debian
# packaging goes beside it as debian/ (in lanchat_$deb_version.debian.tar.xz).
tar -C "$work" --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 \
    -cJf "$work/lanchat_$version.orig.tar.xz" "lanchat-$version"
cp -a "$src/packaging/debian" "$src/debian"

echo "build-debs: building lanchat $version in $src" >&2
# A clean environment: the system's Python (not one from PATH, pyenv or a venv), no
# user site, no locale surprises.
(cd "$src" && env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME="$work" LC_ALL=C.UTF-8 \
    dpkg-buildpackage -us -uc --build=full) >"$work/build.log" 2>&1 \
    || { tail -n 60 "$work/build.log" >&2; die "dpkg-buildpackage failed (log above)"; }

changes="$work/lanchat_${deb_version}_amd64.changes"
[ -f "$changes" ] || changes=$(ls "$work"/lanchat_"$deb_version"_*.changes)
for f in $(sed -n '/^Files:/,/^[^ ]/s/^ [0-9a-f]\{32\} [0-9]* [^ ]* [^ ]* //p' "$changes") \
        "$(basename "$changes")"; do
    cp "$work/$f" "$out/"
done

echo "build-debs: lintian" >&2
# --fail-on error,warning makes any error or warning fail the build; info and
# pedantic tags are shown for the reader but do not.
if ! env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME="$work" LC_ALL=C.UTF-8 lintian --fail-on error,warning --display-info --tag-display-limit 0 \
        "$out/$(basename "$changes")" >"$out/lintian.txt" 2>&1; then
    cat "$out/lintian.txt" >&2
    die "lintian found errors or warnings (above)"
fi
cat "$out/lintian.txt" >&2
echo "build-debs: built in $out:" >&2
ls "$out"/*.deb >&2
