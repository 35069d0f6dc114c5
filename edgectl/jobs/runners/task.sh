#!/bin/sh
# edgectl node-side task runner. Started detached (setsid, stdin from /dev/null) in the
# task directory: runs run.sh, lists the regular files in out/ with size and sha256 in
# `manifest`, and writes `status` (the exit code) last, each file renamed into place whole.
cd "$(dirname "$0")" || exit 1
mkdir -p out claims  # claims/<j>: input j started here, or taken back (remote.TAKEBACK)
sh ./run.sh > stdout.log 2> stderr.log
rc=$?
: > manifest.tmp
for f in out/* out/.[!.]*; do
  [ -f "$f" ] && [ ! -h "$f" ] || continue
  size=$(wc -c < "$f" | tr -d ' ')
  sum=$(sha256sum < "$f" | cut -d ' ' -f 1)
  printf '%s\t%s\t%s\n' "$sum" "$size" "${f#out/}" >> manifest.tmp
done
mv manifest.tmp manifest
echo "$rc" > status.tmp && mv status.tmp status
