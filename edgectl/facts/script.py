"""The probe: one POSIX-sh script, run in one exec per node, printing `key=value` lines.

It needs nothing on the node but a POSIX shell and the usual base utilities; every
probe is optional (a missing tool prints nothing and the fact stays null). It takes the
node's workdir as $1 so that free disk is measured where edgectl will write.

Facts come in two kinds. Per-round facts (hostname, kernel, load, memory, disk, uptime,
temperature) are read on every probe, from /proc and /sys with shell builtins, plus one
`df`. Static facts (os, arch, cores, python3, tesseract and its languages) cost forks and
tens of milliseconds of node CPU (`tesseract --list-langs` loads its data files), so they
are kept in a small cache file in the workdir, `.edgectl-facts`, and reused while it is
valid: same boot, same tesseract/python3 paths and TESSDATA_PREFIX, none of those
binaries, their directories, the tessdata directory or /etc/os-release newer than the
cache, and the cache under an hour old. A package install renames files into the binary's
directory or adds files to the tessdata directory, so it changes a directory's mtime and
ends the cache. `$2 = full` ignores the cache and rewrites it (provisioning does so after
each batch, `edgectl probe --full` on demand). With no existing workdir nothing is cached.
"""

from __future__ import annotations

# The cache holds `cache_key=`, `cache_uptime=`, the static lines, then `cache_end=1`;
# a cache without its end line (a torn write) or with another key is not used.
PROBE_SCRIPT = r"""
LC_ALL=C; export LC_ALL
wd=$1 mode=$2
case $wd in "~") wd=$HOME ;; "~/"*) wd=$HOME/${wd#"~/"} ;; esac
cache=
if [ -d "$wd" ]; then cache=${wd%/}/.edgectl-facts; fi
while [ ! -d "$wd" ] && [ "$wd" != / ] && [ -n "$wd" ]; do
  case $wd in */*) wd=${wd%/*}; wd=${wd:-/} ;; *) wd=. ;; esac
done
# The report is collected in $out and written at the end in one piece: one SSH data
# packet for sshd to send, instead of one per line.
out=
add() { out="$out$1
"; }
path_of() {
  found=
  set -f; ifs=$IFS; IFS=:
  for d in $PATH; do
    if [ -f "${d:-.}/$1" ] && [ -x "${d:-.}/$1" ]; then found=${d:-.}/$1; break; fi
  done
  IFS=$ifs; set +f
}
static_facts() {
  echo "system=$(uname -s 2>/dev/null)"
  echo "arch=$(uname -m 2>/dev/null)"
  if [ -r /etc/os-release ]; then
    sed -n 's/^PRETTY_NAME=//p' /etc/os-release | head -n 1 | sed 's/^"//; s/"$//; s/^/os=/'
  fi
  echo "cores=$(getconf _NPROCESSORS_ONLN 2>/dev/null || nproc 2>/dev/null)"
  if [ -n "$py" ]; then echo "python3=$("$py" -V 2>&1)"; fi
  if [ -n "$tess" ]; then
    echo "tesseract=$("$tess" --version 2>&1 | head -n 1)"
    "$tess" --list-langs 2>/dev/null |
      sed -n '1s/^.* in "\(.*\)".*$/tessdata_dir=\1/p; 2,$s/^/tesseract_lang=/p'
  fi
}
add "edgectl_probe=1"
host= kernel= boot= up=
if [ -r /proc/sys/kernel/hostname ]; then read -r host < /proc/sys/kernel/hostname; fi
add "hostname=${host:-$(uname -n 2>/dev/null)}"
if [ -r /proc/sys/kernel/osrelease ]; then read -r kernel < /proc/sys/kernel/osrelease; fi
kernel=${kernel:-$(uname -r 2>/dev/null)}
add "kernel=$kernel"
if [ -r /proc/sys/kernel/random/boot_id ]; then read -r boot < /proc/sys/kernel/random/boot_id; fi
if [ -r /proc/loadavg ]; then
  read -r l1 l5 l15 rest < /proc/loadavg && add "loadavg=$l1 $l5 $l15"
fi
if [ -r /proc/meminfo ]; then
  mt= ma= n=0
  while read -r k v rest && [ $n -lt 100 ]; do
    n=$((n + 1))
    case $k in MemTotal:) mt=$v ;; MemAvailable:) ma=$v; break ;; esac
  done < /proc/meminfo
  if [ -n "$mt" ]; then add "mem_total_kb=$mt"; fi
  if [ -n "$ma" ]; then add "mem_available_kb=$ma"; fi
fi
# `df -P`: a 7-word header, then filesystem, size, used, available, capacity, mount point.
d=$(df -Pk -- "$wd" 2>/dev/null)
set -f; set -- $d; set +f
if [ $# -ge 11 ]; then shift 7; add "disk_kb=$2 $4"; fi
if [ -r /proc/uptime ]; then read -r up rest < /proc/uptime && add "uptime_s=$up"; fi
for z in /sys/class/thermal/thermal_zone*/temp; do
  [ -r "$z" ] && read -r t < "$z" && add "temp_milli_c=$t"
done
path_of tesseract; tess=$found
path_of python3; py=$found
key="v1 $boot $kernel $tess $py ${TESSDATA_PREFIX-}"
up=${up%%.*}
case $up in ''|*[!0-9]*) up=0 ;; esac
body= used=
if [ "$mode" != full ] && [ -n "$cache" ] && [ -f "$cache" ] && [ -r "$cache" ]; then
  fresh=1 keyed= ended= saved= td= n=0
  for f in "$tess" "${tess%/*}" "$py" "${py%/*}" /etc/os-release; do
    if [ -n "$f" ] && [ "$f" -nt "$cache" ]; then fresh=; fi
  done
  while [ -n "$fresh" ] && [ $n -lt 1000 ] && IFS= read -r line; do
    n=$((n + 1))
    case $line in
      cache_key=*) if [ "${line#cache_key=}" = "$key" ]; then keyed=1; else fresh=; fi ;;
      cache_uptime=*) saved=${line#cache_uptime=} ;;
      cache_end=1) ended=1; break ;;
      *)
        case $line in tessdata_dir=*) td=${line#tessdata_dir=} ;; esac
        body="$body$line
" ;;
    esac
  done < "$cache"
  case $saved in ''|*[!0-9]*) fresh= ;; esac
  if [ -n "$fresh" ] && [ -n "$keyed" ] && [ -n "$ended" ] &&
     [ "$up" -ge "$saved" ] && [ $((up - saved)) -lt 3600 ] &&
     { [ -z "$td" ] || ! [ "$td" -nt "$cache" ]; }; then
    used=1
    out="$out$body"
    add "static_facts=cached"
  fi
fi
if [ -z "$used" ]; then
  if [ -n "$cache" ] && printf "" 2>/dev/null > "$cache.$$.t"; then
    static=$(static_facts)
    add "$static"
    add "static_facts=probed"
    if printf 'cache_key=%s\ncache_uptime=%s\n%s\ncache_end=1\n' "$key" "$up" "$static" \
         > "$cache.$$" 2>/dev/null &&
       touch -r "$cache.$$.t" "$cache.$$" 2>/dev/null; then
      mv -f "$cache.$$" "$cache" 2>/dev/null
    fi
    rm -f "$cache.$$" "$cache.$$.t" 2>/dev/null
  else
    add "$(static_facts)"
    add "static_facts=probed"
  fi
fi
add "edgectl_probe_end=1"
printf '%s' "$out"
"""
