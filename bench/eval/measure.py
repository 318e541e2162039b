#!/usr/bin/env python3
"""Runs one command RUNS times and prints "cpu_best cpu_median maxrss_kb".

CPU is user+sys of the child from wait4's rusage (microsecond resolution,
unlike GNU time's 10 ms), so short workloads still give meaningful ratios on a
shared machine; wall clock is not reported because other processes inflate it.
Peak RSS is the largest ru_maxrss (KiB) over the runs. stdout and stderr of
the command are discarded.

Usage: measure.py RUNS command [args...]
"""

import os
import statistics
import sys


def run_once(argv):
    pid = os.fork()
    if pid == 0:
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.dup2(devnull, 2)
            os.execvp(argv[0], argv)
        finally:
            os._exit(127)
    _, _, usage = os.wait4(pid, 0)
    return usage.ru_utime + usage.ru_stime, usage.ru_maxrss


def main():
    if len(sys.argv) < 3:
        sys.exit("usage: measure.py RUNS command [args...]")
    runs = max(1, int(sys.argv[1]))
    argv = sys.argv[2:]
    cpus, rss = [], 0
    for _ in range(runs):
        cpu, maxrss = run_once(argv)
        cpus.append(cpu)
        rss = max(rss, maxrss)
    print(f"{min(cpus):.4f} {statistics.median(cpus):.4f} {rss}")


if __name__ == "__main__":
    main()
