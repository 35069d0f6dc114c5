#!/bin/sh
# edgectl node-side task runner. Started detached (setsid, stdin from /dev/null) in the
# task directory: runs run.sh, lists the regular files in out/ with size and sha256 in
# `manifest`, and writes `status` (the exit code) last, each file renamed into place whole.
# $1: the node's core gate, N tokens shared by the tasks of this workdir (0: no gate).
# $2: the priority of the task's job: at the gate, a waiting task of a higher one goes first.
cd "$(dirname "$0")" || exit 1
mkdir -p out claims  # claims/<j>: input j started here, or taken back (remote.TAKEBACK)
gate=${1:-0}
case $gate in ""|*[!0-9]*|?????*) gate=0 ;; esac
prio=${2:-0}
case $prio in ""|-|*[!0-9-]*|?*-*|-*-*|???????????*) prio=0 ;; esac
here=${PWD##*/}
# The gate: a task whose inputs are here waits until one of the tokens gate/0 .. gate/N-1
# is free, so that a node keeps more tasks than cores without running more than N at once.
# The token is a flock held on descriptor 9 by this shell alone (run.sh gets it closed):
# it is released when this shell ends or is killed, never kept by a stray child.
if [ "$gate" -gt 0 ] && command -v flock >/dev/null 2>&1 \
  && mkdir -p ../../gate 2>/dev/null && [ -w ../../gate ]; then
  held=
  # gate/wait.<pid>: "<priority> <task dir>" of each task waiting here. One of another task
  # counts while its runner lives and its directory has no status yet.
  wait=../../gate/wait.$$
  echo "$prio $here" > "../../gate/.wait.$$" && mv -f "../../gate/.wait.$$" "$wait"
  while [ -z "$held" ]; do
    ahead=
    for f in ../../gate/wait.*; do
      [ -f "$f" ] && [ "$f" != "$wait" ] || continue
      q= dir=
      read -r q dir < "$f" 2>/dev/null
      case $q in ""|-|*[!0-9-]*|?*-*|-*-*|???????????*) q= ;; esac
      if [ -z "$q" ] || [ -z "$dir" ] || ! kill -0 "${f##*.}" 2>/dev/null \
        || ! [ -d "../$dir" ] || [ -f "../$dir/status" ]; then
        rm -f "$f"  # its runner is gone (killed while it waited)
      elif [ "$q" -gt "$prio" ]; then
        ahead=1
        break
      fi
    done
    i=0
    while [ -z "$ahead" ] && [ "$i" -lt "$gate" ]; do
      exec 9>> "../../gate/$i"
      if flock -n 9; then held=$i; break; fi
      exec 9>&-
      i=$((i + 1))
    done
    # Inputs are claimed by run.sh only once it runs: those of a waiting task can be
    # taken back (remote.TAKEBACK) until then.
    [ -n "$held" ] || sleep 0.2 9>&- 2>/dev/null || sleep 1 9>&-
  done
  rm -f "$wait"
fi
# Computing from here on (the poll reports it).
date +%s > gated.tmp && mv gated.tmp gated
sh ./run.sh > stdout.log 2> stderr.log 9>&-
rc=$?
exec 9>&-  # the token is free for the next task while this one lists its outputs
: > manifest.tmp
for f in out/* out/.[!.]*; do
  [ -f "$f" ] && [ ! -h "$f" ] || continue
  size=$(wc -c < "$f" | tr -d ' ')
  sum=$(sha256sum < "$f" | cut -d ' ' -f 1)
  printf '%s\t%s\t%s\n' "$sum" "$size" "${f#out/}" >> manifest.tmp
done
mv manifest.tmp manifest
echo "$rc" > status.tmp && mv status.tmp status
