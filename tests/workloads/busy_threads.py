"""Four threads that map and unmap without pause (heap blocks of many sizes, which malloc maps
when large, and small mmap-module mappings); prints "ready", then runs until its stdin closes.
For the tests that record a running process too busy to be read while it runs."""

import mmap
import sys
import threading


def churn() -> None:
    keep: list[bytearray] = []
    while True:
        keep.append(bytearray(64 + len(keep) * 997 % 300000))
        if len(keep) > 2000:
            del keep[:1000]
        m = mmap.mmap(-1, 4096 * (1 + len(keep) % 7))
        m[0] = 1
        m.close()


if __name__ == "__main__":
    for _ in range(4):
        threading.Thread(target=churn, daemon=True).start()
    print("ready", flush=True)
    sys.stdin.read()
