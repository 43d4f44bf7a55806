"""What Ray itself costs to start worker actors on this machine, apart from llmhpo: the time
until N actors of an empty class answer a call, on a local cluster already running.

    python benchmarks/ray_startup.py --actors 8 --rounds 3
"""

from __future__ import annotations

import argparse
import os
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--actors", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray

    ray.init(num_cpus=a.actors, include_dashboard=False, log_to_driver=False)

    @ray.remote(num_cpus=0.25)
    class Empty:
        def ping(self) -> int:
            return 1

    for r in range(a.rounds):
        t0 = time.time()
        actors = [Empty.remote() for _ in range(a.actors)]
        ray.get([x.ping.remote() for x in actors])
        print(f"round {r}: {a.actors} actors answered after {time.time() - t0:.2f} s", flush=True)
        for x in actors:
            ray.kill(x)
        time.sleep(1)
    ray.shutdown()


if __name__ == "__main__":
    main()
