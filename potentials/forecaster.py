"""Autoregressive equivariant trajectory forecaster (TrajCast-style), family ``forecaster``.

One call advances a batch of systems by a fixed interval ``tau`` (``interval_steps``
steps of the reference MD, ``tau = interval_steps * timestep_fs`` fs) without forces:

    (x(t), v(t)) -> (d, v(t + tau)),   x(t + tau) = x(t) + d          (Å, Å/fs; d unwrapped)

Inputs: positions ``[N,3]`` Å, atomic numbers ``[N]``, cell ``[B,3,3]`` Å (rows are
lattice vectors), pbc ``[B,3]``, batch ``[N]``, velocities ``[N,3]`` Å/fs. Outputs:
``"displacement" [N,3]`` Å and ``"velocities" [N,3]`` Å/fs.

Features. With ``u_i = v_i / v_rms`` (``v_rms`` the training velocity RMS):

    h_i^0       = Emb(z_i) (+) TP( Emb(z_i), Y(u_i); W(B(|u_i|)) )      (natural irreps up to lmax)
    B_k(s)      = exp(-(s - mu_k)^2 / (2 sigma^2)),  mu_k = 4k/(K-1),  sigma = 4/(K-1)

``Y`` are the *unnormalised* spherical harmonics (``|u|^l Y_l(u/|u|)``), smooth at ``v = 0``;
``W`` an MLP of the speed basis. ``T`` :class:`~potentials.blocks.interaction.InteractionBlock`
layers follow (edges within ``cutoff``, periodic images included), and each layer's
features go through an equivariant linear map to two ``1o`` vectors, summed:
``(n_d, n_v) = sum_t Lin_t(h^t)``.

Outputs (ballistic prior, on by default), with per-species coefficients ``a_z``, ``b_z``:

    d  = a_z v tau + s_d n_d,        v' = b_z v + s_v n_v

so the network predicts the residual of a linear prior; ``a = b = 1`` is free flight.
The trainer fits ``a_z = sum d.v tau / sum |v tau|^2`` and ``b_z = sum v'.v / sum |v|^2``
over the training atoms of species ``z`` (least squares, so the residual is never larger
than the target itself), and ``s_d``, ``s_v`` are the RMS of the residuals
(``displacement_scale``, ``velocity_scale``, Å and Å/fs). Why: for heavy atoms and short
intervals (Cu, Ar) free flight carries most of ``d`` (``a, b ~ 1``) and the network only
learns the force-driven curvature ``~ F tau^2 / 2m``; for hydrogen over 10 fs (a C-H
stretch period is ~11 fs) ``d`` and ``v tau`` are nearly uncorrelated, and forcing
``a = 1`` would make the residual larger than ``d`` (measured on ethanol at 300 K:
RMS(d - v tau) = 0.12 Å against RMS(d) = 0.084 Å). The fitted prior takes the best of
both, and the scaled targets are of order one. Without the prior
(``ballistic_prior=False``) ``a = b = 0``: ``d = s_d n_d``, ``v' = s_v n_v``.

Stochastic forecaster (``stochastic=True``). A forecaster trained on mean-squared error
predicts the conditional mean of ``(d, v')``, which lacks the variance of what it cannot
know (the force integral over the interval, the reference thermostat): every call then
removes kinetic energy and a liquid freezes. With ``stochastic`` the readouts also give
three scalars per atom, a Gaussian over each Cartesian component of the residual:

    sigma_d = c_d s_d exp(l_d),   sigma_v = c_v s_v exp(l_v),   rho = 0.99 tanh(r)

(Å, Å/fs; ``rho`` the correlation of the d and v' residuals, which share the unknown force
integral), trained by the Gaussian negative log-likelihood
(:mod:`mlmd.training.objectives.trajectory`). ``(c_d, c_v)`` = ``spread_calibration``,
set after training so that ``sum m |r|^2 = 3 sum m sigma^2`` on the validation pairs: a sampled
velocity then carries the kinetic energy of the reference on average, whatever the NLL
reached in the time it had. Given standard normal ``noise [N,6]``
(``xi_1 = noise[:, :3]``, ``xi_2 = noise[:, 3:]``; the caller draws it, counter-based and
seeded, so runs and restarts repeat bit for bit) a call samples

    v' += sigma_v xi_2                                              (default)
    d  += sigma_d xi_1,   v' += sigma_v (rho xi_1 + sqrt(1 - rho^2) xi_2)   (``sample_displacement``)

before the conservation layer; without ``noise`` it returns the mean. Why velocities only by
default: the per-atom spreads carry no correlation between atoms, while the true displacement
residuals of neighbours are correlated (they share the pair forces). Independent position noise
of size ``sigma_d`` then strains every bond by about ``sigma_d`` and adds ``~k sigma_d^2 / 2`` of
potential energy per coordinate and call, which the dynamics turns into heat (measured on liquid
Al: sampled jointly the rollout overheated). Velocity noise from the marginal ``sigma_v`` restores
the kinetic energy the mean lacks and, like an Andersen or Langevin thermostat's, adds none to
the configuration. ``sample_displacement`` is a plain attribute, so an exported model can be
switched (``model.module.sample_displacement = True``). The outputs then also
carry ``"displacement_spread"``, ``"velocity_spread"`` (``[N]``, Å and Å/fs) and ``"correlation"``.

The :class:`ConservationLayer` then projects ``(d, v')`` so that momentum and the
motion of the centre of mass are exact (and angular momentum for isolated systems).
Rotations, reflections, translations and permutations act on the outputs as on the
inputs (equivariance), for any weights.
"""

from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from e3nn import o3
from e3nn.nn import FullyConnectedNet
from torch import Tensor

from . import register_family
from .base import AtomisticModel, Configurable
from .blocks.interaction import InteractionBlock
from .blocks.irreps import eager_e3nn, natural_irreps
from .blocks.radial import BesselBasis
from .neighbors import edge_vectors, neighbors_within_cutoff


class ConservationLayer(torch.nn.Module):
    """Project predicted displacements and velocities onto the conservation laws, per system.

    With masses ``m_i`` (amu), ``M = sum_i m_i``, ``P = sum_i m_i v_i`` (old velocities),
    each system ``b`` gets the smallest mass-weighted correction (minimising
    ``sum_i m_i |delta_i|^2``) that makes

    * momentum conserved:       ``sum_i m_i v'_i = P``,
      ``v'_i <- v'_i - (sum_j m_j v'_j - P) / M``;
    * the centre of mass move ballistically: ``sum_i m_i d_i / M = P tau / M``,
      ``d_i <- d_i - (sum_j m_j d_j - P tau) / M``.

    Both hold exactly for any system free of external forces (the internal forces sum to zero).
    For isolated systems (pbc all False) the angular momentum about the centre of mass is
    also restored, ``L = sum_i m_i (x_i - X) x v_i`` at ``t`` and
    ``L' = sum_i m_i (x'_i - X') x v'_i`` at ``t + tau`` (``x' = x + d``):

        v'_i <- v'_i + w x (x'_i - X'),   I' w = L - L'

    with ``I' = sum_i m_i (|r_i|^2 1 - r_i r_i^T)``, ``r_i = x'_i - X'``, the inertia tensor;
    this rigid rotation changes neither the momentum nor the positions. ``I'`` is inverted on
    its range (eigenvalues above ``1e-9`` of the largest), so linear molecules and single atoms
    are handled (their missing components of ``L`` cannot be changed by any velocity).
    Periodic systems conserve no angular momentum and get no such correction.
    """

    def forward(self, displacement: Tensor, new_velocities: Tensor, positions: Tensor, velocities: Tensor,
                masses: Tensor, batch: Tensor, pbc: Tensor, interval: float) -> Tuple[Tensor, Tensor]:
        n_systems = pbc.shape[0]
        m = masses.unsqueeze(1)
        zeros = torch.zeros((n_systems, 3), dtype=positions.dtype, device=positions.device)
        total_mass = torch.zeros(n_systems, dtype=masses.dtype, device=masses.device).index_add(0, batch, masses)
        inv_mass = (1.0 / total_mass).unsqueeze(1)
        momentum = zeros.index_add(0, batch, m * velocities)
        new_momentum = zeros.index_add(0, batch, m * new_velocities)
        new_velocities = new_velocities - ((new_momentum - momentum) * inv_mass)[batch]
        moved = zeros.index_add(0, batch, m * displacement)
        displacement = displacement - ((moved - momentum * interval) * inv_mass)[batch]

        isolated = ~pbc.any(dim=1)
        if bool(isolated.any()):
            centre = (zeros.index_add(0, batch, m * positions) * inv_mass)[batch]
            before = zeros.index_add(0, batch, m * torch.linalg.cross(positions - centre, velocities))
            new_positions = positions + displacement
            new_centre = (zeros.index_add(0, batch, m * new_positions) * inv_mass)[batch]
            r = new_positions - new_centre
            after = zeros.index_add(0, batch, m * torch.linalg.cross(r, new_velocities))
            eye = torch.eye(3, dtype=r.dtype, device=r.device)
            per_atom = m.unsqueeze(2) * ((r * r).sum(dim=1).view(-1, 1, 1) * eye - r.unsqueeze(2) * r.unsqueeze(1))
            inertia = torch.zeros((n_systems, 3, 3), dtype=r.dtype, device=r.device).index_add(0, batch, per_atom)
            values, vectors = torch.linalg.eigh(inertia)
            largest = values.abs().max(dim=1, keepdim=True).values
            keep = values > 1e-9 * largest
            inverse_values = torch.where(keep, 1.0 / torch.where(keep, values, torch.ones_like(values)),
                                         torch.zeros_like(values))
            change = before - after
            omega = torch.einsum("bij,bj,bkj,bk->bi", vectors, inverse_values, vectors, change)
            omega = torch.where(isolated.unsqueeze(1), omega, torch.zeros_like(omega))
            new_velocities = new_velocities + torch.linalg.cross(omega[batch], r)
        return displacement, new_velocities


@register_family("forecaster")
class ForecasterModel(Configurable, AtomisticModel):
    """Equivariant forecaster of ``(displacement, new velocities)`` over ``interval_fs``; see the module docstring.

    ``species`` are atomic numbers and ``masses`` their masses (amu, same order);
    ``cutoff`` Å; ``timestep_fs`` the reference MD step and ``interval_steps`` the number
    of them one call advances (``interval_fs = timestep_fs * interval_steps``).
    ``velocity_rms`` (Å/fs) scales speeds; ``displacement_rms`` (Å) and ``velocity_rms`` are
    the training targets' RMS (reported in metadata), ``displacement_scale`` (Å) and
    ``velocity_scale`` (Å/fs) the RMS of what the network predicts (the residuals of the
    prior ``a_z``, ``b_z`` = ``prior_displacement``, ``prior_velocity`` when ``ballistic_prior``).
    """

    family: str = "forecaster"
    # mlmd train fits it to pairs of reference trajectory frames (mlmd.training.objectives.trajectory).
    training_objective: str = "trajectory"

    def __init__(
        self,
        species: Sequence[int],
        masses: Optional[Sequence[float]] = None,
        cutoff: float = 5.0,
        channels: int = 32,
        lmax: int = 2,
        num_layers: int = 2,
        num_basis: int = 8,
        num_speed_basis: int = 8,
        radial_hidden: int = 64,
        envelope_power: int = 6,
        avg_num_neighbors: float = 10.0,
        timestep_fs: float = 0.5,
        interval_steps: int = 20,
        displacement_rms: float = 0.1,
        velocity_rms: float = 0.01,
        displacement_scale: Optional[float] = None,
        velocity_scale: Optional[float] = None,
        ballistic_prior: bool = True,
        prior_displacement: Optional[Sequence[float]] = None,
        prior_velocity: Optional[Sequence[float]] = None,
        conserve: bool = True,
        stochastic: bool = False,
        spread_calibration: Optional[Sequence[float]] = None,
        sample_displacement: bool = False,
    ):
        super().__init__(list(species), cutoff)
        if channels < 1 or lmax < 1 or num_layers < 1 or num_basis < 1 or num_speed_basis < 2:
            raise ValueError("channels, num_layers, num_basis must be positive, lmax >= 1 (vector outputs) "
                             "and num_speed_basis >= 2")
        if timestep_fs <= 0 or interval_steps < 1:
            raise ValueError(f"timestep_fs must be positive and interval_steps >= 1, got {timestep_fs}, "
                             f"{interval_steps}")
        if masses is None:
            raise ValueError("masses (amu, one per species) are required; the trainer takes them from the data")
        if len(masses) != len(species):
            raise ValueError(f"masses has {len(masses)} values for {len(species)} species")
        if min(float(m) for m in masses) <= 0:
            raise ValueError("masses must be positive (amu)")
        for name, value in (("displacement_rms", displacement_rms), ("velocity_rms", velocity_rms)):
            if value <= 0:
                raise ValueError(f"{name} must be positive, got {value}")
        prior: List[List[float]] = []
        for name, given in (("prior_displacement", prior_displacement), ("prior_velocity", prior_velocity)):
            values = [1.0 if ballistic_prior else 0.0] * len(species) if given is None else [float(a) for a in given]
            if len(values) != len(species):
                raise ValueError(f"{name} has {len(values)} values for {len(species)} species")
            prior.append(values if ballistic_prior else [0.0] * len(species))
        displacement_scale = float(displacement_rms if displacement_scale is None else displacement_scale)
        velocity_scale = float(velocity_rms if velocity_scale is None else velocity_scale)
        self.timestep_fs: float = float(timestep_fs)
        self.interval_steps: int = int(interval_steps)
        self.interval_fs: float = float(timestep_fs) * int(interval_steps)
        self.displacement_rms: float = float(displacement_rms)
        self.velocity_rms: float = float(velocity_rms)
        self.displacement_scale: float = displacement_scale
        self.velocity_scale: float = velocity_scale
        self.ballistic_prior: bool = bool(ballistic_prior)
        self.conserve: bool = bool(conserve)
        self.stochastic: bool = bool(stochastic)
        calibration = [1.0, 1.0] if spread_calibration is None else [float(c) for c in spread_calibration]
        if len(calibration) != 2 or min(calibration) <= 0:
            raise ValueError(f"spread_calibration must be two positive factors (d, v'), got {spread_calibration}")
        self.spread_calibration: List[float] = calibration
        self.sample_displacement: bool = bool(sample_displacement)
        self.channels = int(channels)
        self._config: Dict[str, Any] = dict(
            species=list(self.species), masses=[float(m) for m in masses], cutoff=float(cutoff),
            channels=int(channels), lmax=int(lmax), num_layers=int(num_layers), num_basis=int(num_basis),
            num_speed_basis=int(num_speed_basis), radial_hidden=int(radial_hidden),
            envelope_power=int(envelope_power), avg_num_neighbors=float(avg_num_neighbors),
            timestep_fs=float(timestep_fs), interval_steps=int(interval_steps),
            displacement_rms=float(displacement_rms), velocity_rms=float(velocity_rms),
            displacement_scale=displacement_scale, velocity_scale=velocity_scale,
            ballistic_prior=bool(ballistic_prior), prior_displacement=prior[0], prior_velocity=prior[1],
            conserve=bool(conserve), stochastic=bool(stochastic), spread_calibration=list(calibration),
            sample_displacement=bool(sample_displacement),
        )
        self.register_buffer("masses", torch.tensor([float(m) for m in masses], dtype=torch.get_default_dtype()))
        self.register_buffer("prior_displacement", torch.tensor(prior[0], dtype=torch.get_default_dtype()))
        self.register_buffer("prior_velocity", torch.tensor(prior[1], dtype=torch.get_default_dtype()))
        self.register_buffer("speed_centres", torch.linspace(0.0, 4.0, num_speed_basis))
        self.speed_width = 4.0 / (num_speed_basis - 1)
        with eager_e3nn():
            self._build(channels, lmax, num_layers, num_basis, num_speed_basis, radial_hidden, envelope_power,
                        avg_num_neighbors)
        self.conservation = ConservationLayer()

    def _build(self, channels: int, lmax: int, num_layers: int, num_basis: int, num_speed_basis: int,
               radial_hidden: int, envelope_power: int, avg_num_neighbors: float) -> None:
        irreps = natural_irreps(channels, lmax)
        irreps_sh = o3.Irreps.spherical_harmonics(lmax)
        self.embedding = torch.nn.Embedding(len(self.species), channels)
        self.radial_basis = BesselBasis(self.cutoff, num_basis, envelope_power)
        self.spherical_harmonics = o3.SphericalHarmonics(irreps_sh, normalize=True, normalization="component")
        self.velocity_harmonics = o3.SphericalHarmonics(irreps_sh, normalize=False, normalization="component")
        scalars = o3.Irreps(f"{channels}x0e")
        self.velocity_product = o3.TensorProduct(
            scalars, irreps_sh, irreps, [(0, l, l, "uvu", True) for l in range(lmax + 1)],
            shared_weights=False, internal_weights=False)
        self.speed_net = FullyConnectedNet([num_speed_basis, radial_hidden, self.velocity_product.weight_numel],
                                           torch.nn.functional.silu)
        blocks = []
        # Two vectors (d, v'), and with ``stochastic`` three scalars (log spreads, correlation).
        outputs = o3.Irreps("2x1o+3x0e" if self.stochastic else "2x1o")
        self.initial_readout = o3.Linear(irreps, outputs)
        readouts = []
        for _ in range(num_layers):
            blocks.append(InteractionBlock(irreps, channels, lmax, num_basis, radial_hidden, avg_num_neighbors))
            readouts.append(o3.Linear(irreps, outputs))
        self.blocks = torch.nn.ModuleList(blocks)
        self.readouts = torch.nn.ModuleList(readouts)

    def extra_metadata(self) -> Dict[str, Any]:
        """What a model file records beyond the potentials' keys (see :func:`mlmd.model.model_metadata`)."""
        return {
            "kind": "forecaster",
            "interval_fs": self.interval_fs,
            "timestep_fs": self.timestep_fs,
            "interval_steps": self.interval_steps,
            "stochastic": self.stochastic,
            "spread_calibration": list(self.spread_calibration),
            "sample_displacement": self.sample_displacement,
            "normalization": {"displacement_rms_A": self.displacement_rms,
                              "velocity_rms_A_per_fs": self.velocity_rms,
                              "displacement_scale_A": self.displacement_scale,
                              "velocity_scale_A_per_fs": self.velocity_scale,
                              "ballistic_prior": self.ballistic_prior,
                              "prior_displacement": self.prior_displacement.tolist(),
                              "prior_velocity": self.prior_velocity.tolist()},
            "units": {"length": "Angstrom", "time": "fs", "velocity": "Angstrom/fs", "mass": "amu"},
        }

    def forward(self, positions: Tensor, atomic_numbers: Tensor, cell: Tensor, pbc: Tensor, batch: Tensor,
                velocities: Tensor, edge_index: Optional[Tensor] = None,
                shifts: Optional[Tensor] = None, noise: Optional[Tensor] = None) -> Dict[str, Tensor]:
        dtype = self.dtype_probe.dtype
        positions = positions.to(dtype)
        velocities = velocities.to(dtype)
        cell = cell.to(dtype)
        species = self.species_index(atomic_numbers)
        edges, edge_shifts = neighbors_within_cutoff(positions, cell, pbc, batch, self.cutoff, edge_index, shifts)
        vectors = edge_vectors(positions, cell, batch, edges, edge_shifts)
        centre = edges[0]
        neighbour = edges[1]
        edge_sh = self.spherical_harmonics(vectors)
        edge_basis = self.radial_basis(torch.linalg.vector_norm(vectors, dim=1))

        scaled = velocities / self.velocity_rms
        speed = torch.linalg.vector_norm(scaled, dim=1, keepdim=True)
        speed_basis = torch.exp(-0.5 * ((speed - self.speed_centres) / self.speed_width) ** 2)
        embedding = self.embedding(species)
        features = self.velocity_product(embedding, self.velocity_harmonics(scaled), self.speed_net(speed_basis))
        features = torch.cat([features[:, :self.channels] + embedding, features[:, self.channels:]], dim=1)

        out = self.initial_readout(features)
        for block, readout in zip(self.blocks, self.readouts):
            features = block(features, edge_sh, edge_basis, centre, neighbour)
            out = out + readout(features)
        displacement = self.displacement_scale * out[:, :3]
        new_velocities = self.velocity_scale * out[:, 3:6]
        spreads: Dict[str, Tensor] = {}
        if self.stochastic:
            # exp of a clamped log: spreads between 3e-4 and 7.4 times the residual RMS (a conditional spread
            # far above the unconditional one is an untrained head, and sampling it puts atoms on top of
            # each other), times the factors fitted on validation pairs after training.
            spread_d = self.displacement_scale * self.spread_calibration[0] * torch.exp(out[:, 6].clamp(-8.0, 2.0))
            spread_v = self.velocity_scale * self.spread_calibration[1] * torch.exp(out[:, 7].clamp(-8.0, 2.0))
            correlation = 0.99 * torch.tanh(out[:, 8])
            spreads = {"displacement_spread": spread_d, "velocity_spread": spread_v, "correlation": correlation}
            if noise is not None:
                first, second = noise[:, :3].to(dtype), noise[:, 3:6].to(dtype)
                if self.sample_displacement:
                    rho = correlation.unsqueeze(1)
                    displacement = displacement + spread_d.unsqueeze(1) * first
                    new_velocities = new_velocities + spread_v.unsqueeze(1) * (
                        rho * first + torch.sqrt(1.0 - rho * rho) * second)
                else:
                    new_velocities = new_velocities + spread_v.unsqueeze(1) * second
        if self.ballistic_prior:
            displacement = displacement + (self.interval_fs * self.prior_displacement[species]).unsqueeze(1) * velocities
            new_velocities = new_velocities + self.prior_velocity[species].unsqueeze(1) * velocities
        if self.conserve:
            displacement, new_velocities = self.conservation(displacement, new_velocities, positions, velocities,
                                                             self.masses[species], batch, pbc, self.interval_fs)
        result: Dict[str, Tensor] = {"displacement": displacement, "velocities": new_velocities}
        for key, value in spreads.items():
            result[key] = value
        if not self.training:
            for key in list(result.keys()):
                result[key] = result[key].detach()
        return result
