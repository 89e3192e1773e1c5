#!/usr/bin/env python3
"""Splits a run sampled every second into tenths (by files done) and prints,
one line per measure, the value of each tenth:

  rate     files/s
  engine   CPU milliseconds per file of noodle-migrate
  server   CPU milliseconds per file of the S3 server (s3s-fs)
  db       CPU milliseconds per file of PostgreSQL

Usage: tenths.py <samples> <files>
A sample line: seconds done failed engine_cpu server_cpu db_cpu (CPU in
seconds since each process started); without the CPU columns, only the
rate is printed."""
import sys

rows = [list(map(float, line.split())) for line in open(sys.argv[1]) if line.strip()]
files = int(sys.argv[2])
start = [0.0, 0.0, 0.0] + rows[0][3:6]
cpu = len(rows[0]) >= 6
rows.insert(0, start)


def at(n):
    """The sample values when the run had done n files, interpolated."""
    for a, b in zip(rows, rows[1:]):
        if b[1] >= n:
            f = (n - a[1]) / (b[1] - a[1]) if b[1] > a[1] else 0.0
            return [x + (y - x) * f for x, y in zip(a, b)]
    return rows[-1]


tenth = files / 10
marks = [at(k * tenth) for k in range(11)]
spans = list(zip(marks, marks[1:]))
rate = [tenth / max(b[0] - a[0], 1e-9) for a, b in spans]
print("rate", *[f"{r:.0f}" for r in rate])
for name, col in (("engine", 3), ("server", 4), ("db", 5)) if cpu else ():
    print(name, *[f"{(b[col] - a[col]) / tenth * 1000:.2f}" for a, b in spans])
