"""A stand-in for a host's periodic background processes: burn BUSY_MS of one core every PERIOD_MS.

    python benchmarks/background_noise.py 2 20 &   # 0.1 of a core, in 2 ms bursts

Run beside a benchmark to see what a little background CPU costs an engine whose model runs on
every core (issue 27: why the 0.6B-shaped model does less work behind our ingress than behind
`vllm serve`). Stop it by its pid.
"""

import sys
import time


def main() -> None:
    busy_s, period_s = float(sys.argv[1]) / 1000, float(sys.argv[2]) / 1000
    while True:
        start = time.perf_counter()
        while time.perf_counter() - start < busy_s:
            pass
        time.sleep(max(0.0, period_s - busy_s))


if __name__ == "__main__":
    main()
