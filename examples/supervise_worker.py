"""A worker that beats from its work loop, and hangs on purpose now and then.

Run under a supervisor (examples/supervise_tree.yaml): when it hangs, its beats stop and
the supervisor kills and restarts it.
"""

import random
import time

from nonsense_hpc.supervise import heart


def main() -> int:
    step = 0
    while True:
        step += 1
        time.sleep(0.2)                # one unit of real work
        heart.beat()                   # "I made progress"
        if random.random() < 0.01:     # a hang: no more beats
            print(f"worker hangs at step {step}", flush=True)
            time.sleep(3600)


if __name__ == "__main__":
    main()
