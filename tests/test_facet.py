"""The ``facet`` family: conformance (per tensor-product kind) and the sphere-grid mixing layer's bound."""

import pytest
import torch
from e3nn import o3

from engine_conformance import LearnedBaselineConformance
from mlmd.training.models import default_dtype
from potentials.testing import RTOL
from potentials import FAMILIES
from potentials.facet import (MIXING_EQUIVARIANCE_BOUND, DensityProductMixing, GauntMessage, SphereGridMixing,
                              mixing_resolution, to_channel_layout, to_irreps_layout)
from potentials.blocks.gaunt import (GauntTensorProduct, exact_resolution, from_grid_matrix, quadrature_grid_matrices,
                                     to_grid_matrix)

# Whole-model rotation tolerance: the mixing layer's bound carried through two layers and the readout,
# measured <= 3e-4 of max |E|, |F| on these systems (untrained weights, 8 channels).
FACET_ROTATION_RTOL = {torch.float32: RTOL[torch.float32], torch.float64: 1e-6}


class FacetConformance(LearnedBaselineConformance):
    species = [1, 6, 8, 29]
    rotation_rtol = FACET_ROTATION_RTOL


class TestFacetGauntConformance(FacetConformance):
    def make_model(self):
        return FAMILIES["facet"](self.species, cutoff=5.0, channels=8, lmax=2, num_layers=3, tensor_product="gaunt")


class TestFacetClebschGordanConformance(FacetConformance):
    def make_model(self):
        return FAMILIES["facet"](self.species, cutoff=5.0, channels=8, lmax=2, num_layers=3,
                                 tensor_product=["gaunt", "cg", "cg"])


class TestFacetDensityProductConformance(LearnedBaselineConformance):
    """The product mixing is exact: in float64 only the grid matrices' float32 rounding (models are built
    under float32, their buffers then cast) is left: measured 1.6e-8 of max |F| on the molecule."""
    species = [1, 6, 8, 29]
    rotation_rtol = {torch.float32: RTOL[torch.float32], torch.float64: 1e-7}

    def make_model(self):
        return FAMILIES["facet"](self.species, cutoff=5.0, channels=8, lmax=2, num_layers=3, mixing="product")


def _double_product_mixing(channels, lmax, correlation):
    with default_dtype(torch.float64):  # grid matrices are buffers in the default dtype: keep them exact
        return DensityProductMixing(channels, lmax, correlation)


def exact_rotation_of_harmonics(lmax, matrix):
    """``M`` with ``Y(R r) = Y(r) M`` for the real harmonics to ``lmax``, by least squares over 200 points:
    exact to ~1e-14 in float64 (e3nn's ``D_from_matrix`` carries float32 constants, ~1e-7 for l >= 2)."""
    points = torch.nn.functional.normalize(torch.randn(200, 3, dtype=torch.float64, generator=torch.Generator()
                                                       .manual_seed(0)), dim=1)
    irreps = o3.Irreps.spherical_harmonics(lmax)
    before = o3.spherical_harmonics(irreps, points, normalize=True, normalization="component")
    after = o3.spherical_harmonics(irreps, points @ matrix.T, normalize=True, normalization="component")
    return torch.linalg.lstsq(before, after).solution


@pytest.mark.parametrize("lmax, correlation", [(1, 3), (2, 2), (2, 3), (3, 3)])
@torch.no_grad()
def test_density_product_is_equivariant_to_round_off(lmax, correlation):
    """``|Mix(x M) - Mix(x) M|`` at round-off on the rule exact to degree ``(nu + 1) L``; e3nn's grid exact to
    ``2 L`` only (what a single projection would need) aliases the products and breaks the symmetry."""
    torch.manual_seed(lmax)
    mix = _double_product_mixing(8, lmax, correlation)
    x = torch.randn(30, 8, (lmax + 1) ** 2, dtype=torch.float64)
    rotation = exact_rotation_of_harmonics(lmax, o3.rand_matrix(dtype=torch.float64))
    expected = mix(x) @ rotation
    assert float((mix(x @ rotation) - expected).abs().max() / expected.abs().max()) < 1e-12
    res = exact_resolution(2 * lmax, lmax)
    scale = (4.0 * torch.pi) ** 0.5
    mix.to_grid, mix.from_grid = scale * to_grid_matrix(lmax, res), from_grid_matrix(lmax, res) / scale
    expected = mix(x) @ rotation
    assert float((mix(x @ rotation) - expected).abs().max() / expected.abs().max()) > 1e-4


@pytest.mark.parametrize("correlation", [1, 2, 3])
@torch.no_grad()
def test_density_product_has_the_stated_correlation_order(correlation):
    """Without its scalar path the output is a polynomial of degree ``nu`` in the input: along ``t x`` its
    ``(nu + 1)``-th finite difference vanishes and its ``nu``-th does not."""
    from math import comb

    torch.manual_seed(4)
    mix = _double_product_mixing(6, 2, correlation)
    mix.scalar.weight.zero_()
    x = torch.randn(10, 6, 9, dtype=torch.float64)

    def difference(order):
        return sum((-1) ** (order - k) * comb(order, k) * mix((1.0 + 0.5 * k) * x) for k in range(order + 1))

    scale = mix(x).abs().max()
    assert difference(correlation + 1).abs().max() < 1e-9 * scale
    assert difference(correlation).abs().max() > 1e-3 * scale


@torch.no_grad()
def test_density_product_of_scalars_is_the_plain_polynomial():
    """For ``L = 0``: ``W_1 a + (W_21 a)(W_22 a) + (W_31 a)(W_32 a)(W_33 a) + W silu(a)`` per atom."""
    torch.manual_seed(5)
    mix = _double_product_mixing(4, 0, 3)
    a = torch.randn(7, 4, dtype=torch.float64)
    w = mix.factors.weight.split(4, dim=0)
    expected = (a @ w[0].T + (a @ w[1].T) * (a @ w[2].T) + (a @ w[3].T) * (a @ w[4].T) * (a @ w[5].T)
                + torch.nn.functional.silu(a) @ mix.scalar.weight.T)
    assert torch.allclose(mix(a[:, :, None])[:, :, 0], expected, atol=1e-12)


@pytest.mark.parametrize("lmax", [1, 2, 3])
@torch.no_grad()
def test_mixing_layer_stays_within_its_equivariance_bound(lmax):
    """``|Mix(D x) - D Mix(x)| <= bound * max|Mix(x)|`` for unit-variance features and random rotations."""
    irreps = o3.Irreps.spherical_harmonics(lmax)
    worst = 0.0
    for seed in range(4):
        torch.manual_seed(seed)
        mix = SphereGridMixing(16, lmax, 16).double()
        x = torch.randn(100, 16, (lmax + 1) ** 2, dtype=torch.float64)
        rotation = irreps.D_from_matrix(o3.rand_matrix(dtype=torch.float64))
        expected = mix(x) @ rotation.T
        worst = max(worst, float((mix(x @ rotation.T) - expected).abs().max() / expected.abs().max()))
    assert worst < MIXING_EQUIVARIANCE_BOUND
    # The bound is not vacuous: a coarse grid (the exact rule for degree 2 L only) breaks it.
    torch.manual_seed(0)
    coarse = SphereGridMixing(16, lmax, 16, res=(2 * lmax + 2, 2 * lmax + 1)).double()
    expected = coarse(x) @ rotation.T
    assert float((coarse(x @ rotation.T) - expected).abs().max() / expected.abs().max()) > MIXING_EQUIVARIANCE_BOUND


@torch.no_grad()
def test_mixing_of_scalars_is_an_exact_mlp():
    """For L = 0 the grid signal is constant: ``Mix(x) = MLP(x_0) + W silu(x_0)`` to round-off."""
    torch.manual_seed(1)
    mix = SphereGridMixing(8, 0, 8).double()
    x = torch.randn(20, 8, 1, dtype=torch.float64)
    expected = mix.mlp(x[:, :, 0]) + mix.scalar(torch.nn.functional.silu(x[:, :, 0]))
    assert torch.allclose(mix(x)[:, :, 0], expected, atol=1e-12)
    assert mix.res == mixing_resolution(0)


@pytest.mark.parametrize("lmax_in, lmax_out", [(0, 2), (2, 2), (2, 0), (1, 1)])
def test_gaunt_message_equals_the_gaunt_product_of_each_edge(lmax_in, lmax_out):
    """Summing on the grid and the grid-free first/last blocks equal ``sum_j Gaunt(U h_j, R Y)`` per edge."""
    torch.manual_seed(2)
    lmax, channels = 2, 4
    with default_dtype(torch.float64):  # grid matrices are buffers in the default dtype: keep them exact
        message = GauntMessage(channels, lmax_in, lmax_out, lmax, num_basis=5, avg_num_neighbors=1.0)
    features = torch.randn(3, channels, (lmax_in + 1) ** 2, dtype=torch.float64)
    edge_sh = torch.randn(4, (lmax + 1) ** 2, dtype=torch.float64)
    edge_basis = torch.randn(4, 5, dtype=torch.float64)
    centre, neighbour = torch.tensor([0, 0, 1, 2]), torch.tensor([1, 2, 0, 0])
    out = message(features, edge_sh, edge_basis, centre, neighbour)
    # Reference: e3nn-grid Gaunt product (integral normalisation) per edge, rescaled to component
    # normalisation (x sqrt(4 pi)), summed over neighbours.
    product = GauntTensorProduct(lmax_in, lmax, lmax_out)
    up = message.linear_up(features)
    weights = message.radial(edge_basis).reshape(4, channels, lmax + 1)[:, :, message.degree]
    per_edge = product(up[neighbour], weights * edge_sh[:, None, :]) * (4 * torch.pi) ** 0.5
    expected = torch.zeros(3, channels, (lmax_out + 1) ** 2, dtype=torch.float64).index_add(0, centre, per_edge)
    assert expected.abs().max() > 0.1
    assert (out - expected).abs().max() < 1e-12 * expected.abs().max()


def test_layout_round_trip():
    x = torch.randn(5, 3, 9)
    assert torch.equal(to_channel_layout(to_irreps_layout(x, 2), 3, 2), x)
    # e3nn's layout: all l = 0 channels, then each channel's 3 l = 1 components, ...
    assert torch.equal(to_irreps_layout(x, 2)[:, :3], x[:, :, 0])
    assert torch.equal(to_irreps_layout(x, 2)[:, 3:6], x[:, 0, 1:4])


def test_lebedev_grid_is_exact_to_degree_seven():
    to_grid, from_grid = quadrature_grid_matrices(3, 7)
    # Y_l Y_l' with l + l' <= 7 integrates to delta: from(to(x)) = x for l <= 3
    assert torch.allclose(to_grid @ from_grid, torch.eye(16, dtype=torch.float64), atol=1e-13)
    to_grid, from_grid = quadrature_grid_matrices(4, 7)  # degree 8 is beyond the rule
    assert not torch.allclose(to_grid @ from_grid, torch.eye(25, dtype=torch.float64), atol=1e-3)


def test_bad_hyperparameters_are_clear_errors():
    with pytest.raises(ValueError, match="tensor_product 'cgx'"):
        FAMILIES["facet"]([1], tensor_product="cgx")
    with pytest.raises(ValueError, match="3 kinds for 2 layers"):
        FAMILIES["facet"]([1], num_layers=2, tensor_product=["gaunt", "cg", "cg"])
    with pytest.raises(ValueError, match="mixing 'products' is not one of"):
        FAMILIES["facet"]([1], mixing="products")
    with pytest.raises(ValueError, match="mixing_correlation must be at least 1"):
        FAMILIES["facet"]([1], mixing="product", mixing_correlation=0)


def test_trained_weights_load_into_a_finer_mixing_grid():
    """Grid matrices are not weights: a model with a finer mixing grid takes the same state dict
    (strict) and is closer to rotation invariant while its energy barely moves."""
    from potentials.testing import evaluate, random_rotation, transformed, SYSTEMS

    torch.manual_seed(3)
    coarse = FAMILIES["facet"]([1, 6, 8], channels=8, num_layers=2).double().eval()
    with torch.no_grad():  # larger weights than at initialisation, so the grid's aliasing shows
        for parameter in coarse.parameters():
            parameter.mul_(2.0)
    fine = FAMILIES["facet"]([1, 6, 8], channels=8, num_layers=2, mixing_resolution=(32, 31)).double().eval()
    fine.load_state_dict(coarse.state_dict(), strict=True)
    atoms = SYSTEMS["molecule"]()
    rotation = random_rotation(11)
    errors = {}
    for name, model in (("coarse", coarse), ("fine", fine)):
        before = evaluate(model, [atoms], torch.float64)
        after = evaluate(model, [transformed(atoms, rotation)], torch.float64)
        errors[name] = abs(after["forces"] - before["forces"] @ rotation.T).max() / abs(before["forces"]).max()
    energy = {name: evaluate(model, [atoms], torch.float64)["energy"][0] for name, model in
              (("coarse", coarse), ("fine", fine))}
    assert errors["fine"] < errors["coarse"] / 5, errors
    assert abs(energy["fine"] - energy["coarse"]) < 1e-2 * abs(energy["coarse"]), energy
