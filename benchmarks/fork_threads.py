"""Do thread settings take effect in a process forked after ``import tensorflow``?

    python benchmarks/fork_threads.py

Lists the threads after the import, then for a few intra/inter settings forks a child that sets
them, runs a few matmuls and reports the getters and its threads by name, and runs the same in a
fresh process for comparison (docs/benchmarks.md, 2026-11-30; docs/methodology.md on why tuner
does not fork its trials).
"""

from __future__ import annotations

import collections
import os
import subprocess
import sys
import time

SETTINGS = ((1, 1), (2, 3), (0, 0))


def threads() -> dict[str, int]:
    names = []
    for tid in os.listdir("/proc/self/task"):
        try:
            names.append(open(f"/proc/self/task/{tid}/comm").read().strip())
        except OSError:
            pass
    return dict(collections.Counter(names))


def work(tf, intra: int, inter: int) -> str:
    tf.config.threading.set_intra_op_parallelism_threads(intra)
    tf.config.threading.set_inter_op_parallelism_threads(inter)
    a = tf.random.normal((256, 256))
    for _ in range(20):
        a = tf.matmul(a, a) / 256.0
    return (f"intra={intra} inter={inter}: getters "
            f"{tf.config.threading.get_intra_op_parallelism_threads()},"
            f"{tf.config.threading.get_inter_op_parallelism_threads()} threads {threads()}")


def main() -> None:
    if len(sys.argv) == 3:   # the fresh-process comparison
        import tensorflow as tf

        print("fresh " + work(tf, int(sys.argv[1]), int(sys.argv[2])))
        return
    started = time.perf_counter()
    import tensorflow as tf

    print(f"import: {time.perf_counter() - started:.2f} s; threads after it: {threads()}")
    for intra, inter in SETTINGS:
        read, write = os.pipe()
        started = time.perf_counter()
        pid = os.fork()
        if pid == 0:
            os.write(write, work(tf, intra, inter).encode())
            os._exit(0)
        os.close(write)
        os.waitpid(pid, 0)
        print(f"fork  {os.read(read, 4096).decode()} ({time.perf_counter() - started:.2f} s)")
        subprocess.run([sys.executable, __file__, str(intra), str(inter)], check=True,
                       stderr=subprocess.DEVNULL)


if __name__ == "__main__":
    main()
