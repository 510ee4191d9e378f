#!/bin/bash
# Copy the project's source tree into DEST (an empty or missing directory), so that
# builds start from exactly what git holds and never from stray build output.
#
#   packaging/export-tree.sh DEST              the last commit (HEAD)
#   packaging/export-tree.sh --worktree DEST   the working tree: tracked files as they
#                                              are now, plus new files .gitignore does
#                                              not exclude
set -euo pipefail

worktree=no
if [ "${1:-}" = "--worktree" ]; then
    worktree=yes
    shift
fi
[ $# -eq 1 ] || { echo "usage: $0 [--worktree] DEST" >&2; exit 2; }
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dest=$1
git -C "$repo" rev-parse --git-dir >/dev/null 2>&1 || {
    echo "export-tree: $repo is not a git checkout" >&2; exit 1; }
mkdir -p "$dest"
if [ "$worktree" = yes ]; then
    git -C "$repo" ls-files -z --cached --others --exclude-standard --deduplicate \
        | (cd "$repo" && while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done) \
        | tar -C "$repo" --null -T - -cf - | tar -C "$dest" -xf -
else
    git -C "$repo" archive --format=tar HEAD | tar -C "$dest" -xf -
fi
