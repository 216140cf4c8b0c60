"""Gaunt tensor product through the sphere grid: equivariance, relation to the
Clebsch-Gordan product (even paths only, one scalar per path), no cross product,
and necessity of the grid resolution rule."""
import pytest
import torch
from e3nn import o3

from potentials.blocks.gaunt import GauntTensorProduct, even_paths, grid_resolution

torch.set_num_threads(1)
DT = torch.float64


def _cg_path(l1, l2, l3):
    """e3nn's bare Clebsch-Gordan product for one path (no weights, no normalization)."""
    return o3.TensorProduct(f"{l1}{'eo'[l1 % 2]}", f"{l2}{'eo'[l2 % 2]}", f"{l3}{'eo'[l3 % 2]}",
                            [(0, 0, 0, "uuu", False)], irrep_normalization="none",
                            path_normalization="none").to(DT)


def _block(l):
    return slice(l * l, (l + 1) ** 2)


def test_equivariance_float64():
    torch.manual_seed(0)
    tp = GauntTensorProduct(3, 2, 4)
    x1 = torch.randn(20, 3, 16, dtype=DT)
    x2 = torch.randn(20, 3, 9, dtype=DT)
    R = o3.rand_matrix(dtype=DT)
    D1, D2, Do = (irreps.D_from_matrix(R) for irreps in (tp.irreps_in1, tp.irreps_in2, tp.irreps_out))
    out = tp(x1, x2)
    err = (tp(x1 @ D1.T, x2 @ D2.T) - out @ Do.T).abs().max().item()
    # measured ~7e-7: the floor of e3nn 0.6's own float64 Wigner-D matrices (its spherical
    # harmonics fail the same check by ~2e-7); the product itself is exact to ~1e-15
    # (grid-independence, test below)
    assert err < 1e-5 * out.abs().max().item(), err


def test_even_paths_equal_clebsch_gordan_up_to_one_scalar_per_path():
    torch.manual_seed(1)
    lmax = 3
    tp = GauntTensorProduct(lmax, lmax, lmax)
    n = 16
    x1 = torch.randn(n, 1, 16, dtype=DT)
    x2 = torch.randn(n, 1, 16, dtype=DT)
    full = tp(x1, x2)[:, 0]
    reference = torch.zeros_like(full)
    for l1, l2, l3 in even_paths(lmax, lmax, lmax):
        a = torch.zeros_like(x1)
        b = torch.zeros_like(x2)
        a[..., _block(l1)] = x1[..., _block(l1)]
        b[..., _block(l2)] = x2[..., _block(l2)]
        gaunt = tp(a, b)[:, 0]
        cg = _cg_path(l1, l2, l3)(x1[:, 0, _block(l1)], x2[:, 0, _block(l2)])
        scale = (gaunt[:, _block(l3)] * cg).sum() / (cg * cg).sum()
        residual = (gaunt[:, _block(l3)] - scale * cg).norm() / cg.norm()
        assert abs(scale) > 1e-3, (l1, l2, l3)
        assert residual < 1e-7, ((l1, l2, l3), residual)  # measured <= 3e-9 (e3nn's 3j precision)
        # nothing leaks into the other output degrees
        others = [l for l in range(lmax + 1) if l != l3]
        assert all(gaunt[:, _block(l)].abs().max() < 1e-12 for l in others if (l1 + l2 + l) % 2 or l < abs(l1 - l2) or l > l1 + l2)
        reference[:, _block(l3)] += scale * cg
    assert (full - reference).abs().max() < 1e-7


def test_cannot_form_cross_product():
    torch.manual_seed(2)
    a = torch.randn(8, 3, dtype=DT)
    b = torch.randn(8, 3, dtype=DT)
    tp = GauntTensorProduct(1, 1)  # vectors in l=1 slots, output 0..2
    x1 = torch.zeros(8, 1, 4, dtype=DT)
    x2 = torch.zeros(8, 1, 4, dtype=DT)
    x1[..., 1:4] = a[:, None]
    x2[..., 1:4] = b[:, None]
    out = tp(x1, x2)[:, 0]
    assert out[:, _block(1)].abs().max() < 1e-13          # l=1 output (the cross product) is zero
    assert out[:, _block(0)].abs().min() > 0              # dot product path present
    cross = o3.FullTensorProduct("1o", "1o", filter_ir_out=["1e"]).to(DT)(a, b)
    assert cross.abs().max() > 0.1                        # CG 1x1->1 is the cross product
    # e3nn's 1o x 1o -> 1e is proportional to a x b (in e3nn's y,z,x component order)
    ref = torch.cross(a, b, dim=1)  # cyclic (y,z,x) order keeps the handedness
    ratio = (cross * ref).sum() / (ref * ref).sum()
    assert (cross - ratio * ref).abs().max() < 1e-6 * ref.abs().max()


@pytest.mark.parametrize("coarser", [(-2, 0), (0, -2)])
def test_coarser_grid_than_rule_is_wrong(coarser):
    torch.manual_seed(3)
    lmax = 2
    res_beta, res_alpha = grid_resolution(lmax, lmax, lmax)  # (8, 7): degree 6 integrand
    exact = GauntTensorProduct(lmax, lmax, lmax)
    finer = GauntTensorProduct(lmax, lmax, lmax, res=(res_beta + 6, res_alpha + 6))
    coarse = GauntTensorProduct(lmax, lmax, lmax, res=(res_beta + coarser[0], res_alpha + coarser[1]))
    x1 = torch.randn(32, 1, 9, dtype=DT)
    x2 = torch.randn(32, 1, 9, dtype=DT)
    ref = exact(x1, x2)
    assert (finer(x1, x2) - ref).abs().max() < 1e-12      # the rule's grid is already exact
    assert (coarse(x1, x2) - ref).abs().max() > 1e-3 * ref.abs().max()


def test_torchscript_and_float32():
    torch.manual_seed(4)
    tp = GauntTensorProduct(2, 2, 2)
    scripted = torch.jit.script(tp)
    x1 = torch.randn(5, 2, 9, dtype=DT)
    x2 = torch.randn(5, 2, 9, dtype=DT)
    assert torch.allclose(scripted(x1, x2), tp(x1, x2))
    tp32 = GauntTensorProduct(2, 2, 2, dtype=torch.float32)
    assert torch.allclose(tp32(x1.float(), x2.float()).double(), tp(x1, x2), atol=1e-5)
