#!/usr/bin/env python3
"""Runs a command once and prints `SECONDS PEAK_KIB` (wall time and the child's peak RSS)
on the last line of stderr; the command's own output goes to a file or /dev/null."""
import resource, subprocess, sys, time

out = sys.argv[1]
cmd = sys.argv[2:]
with open(out, "wb") as f:
    t0 = time.perf_counter()
    rc = subprocess.call(cmd, stdout=f, stderr=subprocess.STDOUT)
    dt = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(f"{dt:.4f} {peak} {rc}")
