"""Time one energy-and-forces call of the shipped ethanol model with 1 and 2 torch threads.

Prints the median wall time per call for each thread count; the result picks
``mlmd.model.DEFAULT_THREADS`` (see the README, "Threads").

    python scripts/time_threads.py [--calls 200] [--replicas 1]
"""

import argparse
import statistics
import time

import torch
from ase.build import molecule

import mlmd
from mlmd.dynamics import replicate


def median_call_ms(model, system, calls: int) -> float:
    arguments = system.arguments()
    inputs = (system.positions, arguments["atomic_numbers"], arguments["cell"], arguments["pbc"], arguments["batch"])
    for _ in range(5):  # TorchScript optimises after a few calls
        model.energy_forces(*inputs)
    times = []
    for _ in range(calls):
        began = time.perf_counter()
        model.energy_forces(*inputs)
        times.append(time.perf_counter() - began)
    return 1e3 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--replicas", type=int, default=1)
    args = parser.parse_args()
    model = mlmd.load_model(mlmd.pretrained("ethanol"))
    system = replicate(molecule("CH3CH2OH"), args.replicas, seed=0)
    for threads in (1, 2):
        torch.set_num_threads(threads)
        print(f"{threads} thread(s): median {median_call_ms(model, system, args.calls):.3f} ms per call "
              f"({args.replicas} replica(s) of ethanol, {args.calls} calls)")


if __name__ == "__main__":
    main()
