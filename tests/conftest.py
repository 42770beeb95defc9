"""Test-suite root. Its folder is on ``sys.path`` (pytest's prepend import mode), so every
test package's helpers can share ``procs`` (free ports, collector subprocesses)."""
