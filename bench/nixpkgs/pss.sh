#!/usr/bin/env bash
# Samples the memory of a process tree while it runs: every 0.1 s, the sum
# of the proportional set sizes (Pss, from /proc/PID/smaps_rollup) of PID and
# all its descendants, and the largest resident set of any one of them.
# Prints at the end: "peak_pss_sum_kib peak_single_rss_kib max_processes".
# Pages a forked child still shares with its parent count once in the Pss
# sum (split between them), so the sum is what the tree really occupies.
# Usage: bench/nixpkgs/pss.sh PID
set -u
root=$1
peak_sum=0 peak_rss=0 peak_n=0
tree() { # PID and its descendants
  local all
  all=$(awk '{ print $1, $4 }' /proc/[0-9]*/stat 2>/dev/null)
  awk -v r="$root" '{ kids[$2] = kids[$2] " " $1 } END {
      q[1] = r; n = 1; i = 1
      while (i <= n) { p = q[i++]; print p; m = split(kids[p], k, " "); for (j = 1; j <= m; j++) q[++n] = k[j] } }' <<<"$all"
}
while kill -0 "$root" 2>/dev/null; do
  sum=0 n=0
  for p in $(tree); do
    read -r pss rss < <(awk '/^Pss:/ { p = $2 } /^Rss:/ { r = $2 } END { print p + 0, r + 0 }' "/proc/$p/smaps_rollup" 2>/dev/null) || continue
    [ "${pss:-0}" -gt 0 ] || continue
    sum=$((sum + pss)); n=$((n + 1))
    [ "$rss" -gt "$peak_rss" ] && peak_rss=$rss
  done
  [ "$sum" -gt "$peak_sum" ] && peak_sum=$sum
  [ "$n" -gt "$peak_n" ] && peak_n=$n
  sleep 0.1
done
echo "$peak_sum $peak_rss $peak_n"
