#!/usr/bin/env bash
# Keeps the shared build cache ($CARGO_TARGET_DIR, ~/.cache/aispm/target by default) from growing
# without bound. Every build of a changed test leaves a new executable beside the old ones, and every
# fresh clone at a new path builds the workspace crates and their incremental state anew; run after
# run, that filled a 250 GB disk. This removes only what no later build reads:
#   - a test, bench, binary or example executable that a newer build of the same target
#     superseded. A file name alone does not say which target built it (`aispm_projector-<hash>`
#     is both the projector binary and its unit tests, `projector-<hash>` both an integration
#     test and a bench), so the target comes from cargo's fingerprint directory of that hash
#     (`.fingerprint/<package>-<hash>/bin-aispm-projector`, `test-lib-aispm_projector`, ...);
#     an executable without one is kept;
#   - the workspace's own library artifacts and incremental state untouched for two days.
# Third-party artifacts (RocksDB's C++ above all) are never touched, so the cache stays warm.
set -euo pipefail
TARGET="${CARGO_TARGET_DIR:-${AISPM_CACHE:-$HOME/.cache/aispm}/target}"
[ -d "$TARGET" ] || exit 0
before=$(du -sk "$TARGET" | cut -f1)

for profile in "$TARGET"/debug "$TARGET"/release; do
  for dir in "$profile/deps" "$profile/examples"; do
    [ -d "$dir" ] || continue
    # Newest first; every later file of the same target (the name of its fingerprint) is
    # superseded.
    find "$dir" -maxdepth 1 -type f -executable -regextype posix-extended \
      -regex '.*/[A-Za-z0-9_]+-[0-9a-f]{16}' -printf '%T@ %p\n' |
      sort -rn |
      while read -r _ path; do
        hash="${path##*-}"
        target=""
        for f in "$profile"/.fingerprint/*-"$hash"/*; do
          case "${f##*/}" in
            bin-*.json | test-*.json | bench-*.json | example-*.json) target="${f##*/}" ;;
          esac
        done
        # (an `if`: a false `[` as the loop's last command would fail the pipeline under -e)
        if [ -n "$target" ]; then printf '%s %s\n' "$target" "$path"; fi
      done |
      awk '{ if (seen[$1]++) print $2 }' |
      xargs -r rm -f
    find "$dir" -maxdepth 1 -type f -name '*aispm*' -mtime +2 -delete
  done
  if [ -d "$profile/incremental" ]; then
    find "$profile/incremental" -mindepth 1 -maxdepth 1 -type d -mtime +2 -exec rm -rf {} +
  fi
done

after=$(du -sk "$TARGET" | cut -f1)
echo "[prune-target] $TARGET: $(( (before - after) / 1024 )) MiB of superseded build output removed, $(( after / 1024 )) MiB kept"
