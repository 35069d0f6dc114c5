"""The probe: one POSIX-sh script, run in one exec per node, printing `key=value` lines.

It needs nothing on the node but a POSIX shell and the usual base utilities; every
probe is optional (a missing tool prints nothing and the fact stays null). It takes the
node's workdir as $1 so that free disk is measured where edgectl will write.
"""

from __future__ import annotations

PROBE_SCRIPT = r"""
LC_ALL=C; export LC_ALL
wd=$1
case $wd in "~") wd=$HOME ;; "~/"*) wd=$HOME/${wd#"~/"} ;; esac
while [ ! -d "$wd" ] && [ "$wd" != / ] && [ -n "$wd" ]; do wd=$(dirname -- "$wd"); done
echo "edgectl_probe=1"
echo "hostname=$(uname -n 2>/dev/null)"
echo "kernel=$(uname -r 2>/dev/null)"
echo "arch=$(uname -m 2>/dev/null)"
echo "system=$(uname -s 2>/dev/null)"
if [ -r /etc/os-release ]; then
  sed -n 's/^PRETTY_NAME=//p' /etc/os-release | head -n 1 | sed 's/^"//; s/"$//; s/^/os=/'
fi
c=$(getconf _NPROCESSORS_ONLN 2>/dev/null || nproc 2>/dev/null)
echo "cores=$c"
if [ -r /proc/loadavg ]; then
  read -r l1 l5 l15 rest < /proc/loadavg && echo "loadavg=$l1 $l5 $l15"
fi
if [ -r /proc/meminfo ]; then
  sed -n 's/^MemTotal:[[:space:]]*\([0-9]*\) kB.*/mem_total_kb=\1/p; s/^MemAvailable:[[:space:]]*\([0-9]*\) kB.*/mem_available_kb=\1/p' /proc/meminfo
fi
df -Pk -- "$wd" 2>/dev/null | sed -n '2s/^[^ ]*[ ]*\([0-9]*\)[ ]*[0-9]*[ ]*\([0-9]*\).*/disk_kb=\1 \2/p'
if [ -r /proc/uptime ]; then read -r up rest < /proc/uptime && echo "uptime_s=$up"; fi
if command -v python3 >/dev/null 2>&1; then echo "python3=$(python3 -V 2>&1)"; fi
if command -v tesseract >/dev/null 2>&1; then
  echo "tesseract=$(tesseract --version 2>&1 | head -n 1)"
  tesseract --list-langs 2>/dev/null | sed -n '2,$s/^/tesseract_lang=/p'
fi
for z in /sys/class/thermal/thermal_zone*/temp; do
  [ -r "$z" ] && read -r t < "$z" && echo "temp_milli_c=$t"
done
echo "edgectl_probe_end=1"
"""
