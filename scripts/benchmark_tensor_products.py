"""Micro-benchmark: Clebsch-Gordan versus grid (Gaunt) tensor product, degrees 1..6.

For each maximum degree L (inputs and output all ``0e+1o+...`` up to L) it times,
as the median of ``--repeats`` runs after one warm-up,

- CG: e3nn ``o3.TensorProduct`` with every parity-even path (l1+l2+l3 even,
  the only ones a Gaunt product has), mode "uuu", no weights;
- grid: :class:`potentials.blocks.gaunt.GauntTensorProduct` (sphere grid sized by its
  exactness rule),

forward only and forward+backward (gradients w.r.t. both inputs), on a batch of
``--batch`` (default 10,000) rows with one channel (channels fold into the batch
in "uuu" mode, so C channels cost like C times the batch). The error column is
the grid result against the CG result with one fitted scale per path (the
Gaunt/Wigner-3j ratio), max-abs relative to max-abs of the output, in the timing
dtype and in float64.

    python scripts/benchmark_tensor_products.py [--batch 10000] [--lmax 6] [--device cpu]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
from e3nn import o3

from potentials.blocks.gaunt import GauntTensorProduct, even_paths


def cg_even_product(lmax: int, scales: dict | None = None) -> o3.TensorProduct:
    """e3nn CG product with all even paths, each multiplied by a fixed weight ``scales[(l1,l2,l3)]``.

    The weights are e3nn internal weights (one per path, frozen): e3nn's
    ``path_weight`` cannot carry them, it is square-rooted and so cannot be negative.
    """
    irreps = o3.Irreps.spherical_harmonics(lmax)
    paths = even_paths(lmax, lmax, lmax)
    tp = o3.TensorProduct(irreps, irreps, irreps, [(l1, l2, l3, "uuu", True) for l1, l2, l3 in paths],
                          irrep_normalization="none", path_normalization="none", internal_weights=True)
    with torch.no_grad():
        tp.weight.copy_(torch.tensor([1.0 if scales is None else scales[p] for p in paths]))
    tp.weight.requires_grad_(False)
    return tp


def fit_path_scales(lmax: int, n_rows: int = 64) -> dict:
    """Per path, the scalar c with Gaunt_path = c * CG_path (least squares, float64)."""
    dt = torch.float64
    gaunt = GauntTensorProduct(lmax, lmax, lmax, dtype=dt)
    scales = {}
    for l1, l2, l3 in even_paths(lmax, lmax, lmax):
        x1 = torch.zeros(n_rows, (lmax + 1) ** 2, dtype=dt)
        x2 = torch.zeros(n_rows, (lmax + 1) ** 2, dtype=dt)
        x1[:, l1 * l1:(l1 + 1) ** 2] = torch.randn(n_rows, 2 * l1 + 1, dtype=dt)
        x2[:, l2 * l2:(l2 + 1) ** 2] = torch.randn(n_rows, 2 * l2 + 1, dtype=dt)
        g = gaunt(x1, x2)[:, l3 * l3:(l3 + 1) ** 2]
        one = o3.TensorProduct(f"{l1}{'eo'[l1 % 2]}", f"{l2}{'eo'[l2 % 2]}", f"{l3}{'eo'[l3 % 2]}",
                               [(0, 0, 0, "uuu", False)], irrep_normalization="none",
                               path_normalization="none").to(dt)
        cg = one(x1[:, l1 * l1:(l1 + 1) ** 2], x2[:, l2 * l2:(l2 + 1) ** 2])
        scales[(l1, l2, l3)] = ((g * cg).sum() / (cg * cg).sum()).item()
    return scales


def median_time_s(fn, repeats: int, device: torch.device) -> float:
    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()
    fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=10_000)
    parser.add_argument("--lmax", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=11)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)

    print(f"batch {args.batch} x 1 channel, {args.dtype}, device {device}, "
          f"{torch.get_num_threads()} thread(s), median of {args.repeats}; times in ms")
    header = (f"{'L':>2} {'paths':>5} {'grid':>7} | {'CG fwd':>8} {'grid fwd':>8} {'CG f+b':>8} "
              f"{'grid f+b':>8} | {'err ' + args.dtype:>12} {'err float64':>12}")
    print(header)
    print("-" * len(header))
    rows = []
    for lmax in range(1, args.lmax + 1):
        scales = fit_path_scales(lmax)
        cg = cg_even_product(lmax, scales).to(device=device, dtype=dtype)
        grid = GauntTensorProduct(lmax, lmax, lmax, dtype=dtype).to(device)
        dim = (lmax + 1) ** 2
        x1 = torch.randn(args.batch, dim, device=device, dtype=dtype, requires_grad=True)
        x2 = torch.randn(args.batch, dim, device=device, dtype=dtype, requires_grad=True)
        grad_out = torch.randn(args.batch, dim, device=device, dtype=dtype)

        def fwd(tp):
            with torch.no_grad():
                tp(x1, x2)

        def fwd_bwd(tp):
            out = tp(x1, x2)
            torch.autograd.grad(out, (x1, x2), grad_out)

        t_cg = median_time_s(lambda: fwd(cg), args.repeats, device)
        t_grid = median_time_s(lambda: fwd(grid), args.repeats, device)
        tb_cg = median_time_s(lambda: fwd_bwd(cg), args.repeats, device)
        tb_grid = median_time_s(lambda: fwd_bwd(grid), args.repeats, device)
        with torch.no_grad():
            err = relative_error(grid(x1, x2), cg(x1, x2).to(dtype))
            n64 = min(args.batch, 1000)
            a, b = x1[:n64].double(), x2[:n64].double()
            err64 = relative_error(grid.double()(a, b), cg.double()(a, b))
        n_paths = len(scales)
        print(f"{lmax:>2} {n_paths:>5} {grid.res[0]:>3}x{grid.res[1]:<3} | {1e3 * t_cg:8.2f} {1e3 * t_grid:8.2f} "
              f"{1e3 * tb_cg:8.2f} {1e3 * tb_grid:8.2f} | {err:12.1e} {err64:12.1e}")
        rows.append((lmax, t_cg, t_grid, tb_cg, tb_grid))

    for label, i_cg, i_grid in (("forward", 1, 2), ("forward+backward", 3, 4)):
        faster = [r[0] for r in rows if r[i_grid] < r[i_cg]]
        crossover = next((r[0] for r in rows if all(s[i_grid] < s[i_cg] for s in rows if s[0] >= r[0])), None)
        print(f"crossover ({label}): " + (f"grid faster from L = {crossover} on" if crossover is not None
                                          else "grid never faster for all higher L")
              + f"; grid faster at L = {faster}")


if __name__ == "__main__":
    main()
