"""Gaussian process on energies and gradients of the moving atoms.

Observations are ``y = [E_1 - E_ref, ..., E_N - E_ref, G_1, ..., G_N]`` with
``E_ref`` the first observed energy (eV) and ``G`` the gradients (eV/Å); the
prior mean is zero, the kernel is :func:`mlmd.saddle.kernel.covariance`, and
the noise is small and fixed (variances ``energy_noise_var`` eV² and
``gradient_noise_var`` eV²/Å²). The posterior mean is
``m(x) = K(x, X) K(X, X)⁻¹ y`` (one Cholesky factorisation of all data).

Hyperparameters (signal variance sigma_f², length scales l_t) are the
maximum a posteriori estimate, minimising

    ½ yᵀK⁻¹y + ½ log det K                         (negative log marginal likelihood)
    + (log sigma_f² - log s²)² / (2 · 2²)           (log-normal prior, s = energy scale)
    + sum_t (log l_t - log l0_t)² / (2 · 1²)        (log-normal prior, l0 from the first data)
    - mu log(1 - sigma_f² / sigma_max²)             (log barrier on the signal variance)

with ``sigma_max = barrier_factor · energy range`` of the data (energy range =
max(E_max - E_min, ‖G‖_max · 1 Å)), so the barrier follows the system's own
energy scale rather than a fixed number of eV. sigma_f² = sigma_max² ·
sigmoid(θ), which keeps every optimiser step inside the barrier. The
optimisation (L-BFGS, autograd through the batched kernel and Cholesky) is
warm-started from the previous fit. With pruning, the fit sees only a subset
of the data (:func:`mlmd.saddle.distance.pruned_subset`); predictions always
use all of it.
"""

import math
import time
from typing import Optional, Sequence

import numpy as np
import torch

from .kernel import DTYPE, CovarianceCache, Hyperparameters, covariance


class GaussianProcess:
    def __init__(self, features, energy_noise_var: float = 1e-8, gradient_noise_var: float = 1e-8,
                 barrier_factor: float = 10.0, barrier_strength: float = 1e-3, max_fit_iterations: int = 60):
        self.features = features
        self.device = features.device
        self.energy_noise_var = energy_noise_var
        self.gradient_noise_var = gradient_noise_var
        self.barrier_factor = barrier_factor
        self.barrier_strength = barrier_strength
        self.max_fit_iterations = max_fit_iterations
        self.X = []  # flattened moving coordinates (Å)
        self.E = []  # eV
        self.G = []  # eV/Å
        self._f = None
        self._J = None
        self.log_lengths: Optional[torch.Tensor] = None
        self.signal_var: Optional[float] = None
        self.length_prior: Optional[torch.Tensor] = None
        self.seconds = 0.0
        self._alpha = None

    # --- data ---------------------------------------------------------------
    def add(self, x: np.ndarray, energy: float, gradient: np.ndarray) -> None:
        x_t = torch.as_tensor(np.asarray(x, dtype=float).reshape(1, -1), dtype=DTYPE, device=self.device)
        f, J = self.features(x_t)
        self._f = f if self._f is None else torch.cat([self._f, f])
        self._J = J if self._J is None else torch.cat([self._J, J])
        self.X.append(np.asarray(x, dtype=float).ravel().copy())
        self.E.append(float(energy))
        self.G.append(np.asarray(gradient, dtype=float).ravel().copy())
        self._alpha = None

    def __len__(self) -> int:
        return len(self.X)

    @property
    def data_features(self) -> torch.Tensor:
        """Features [N, P] of the observed configurations (1/Å for inverse distances)."""
        return self._f

    def energy_range(self) -> float:
        """max(E_max - E_min, ‖G‖_max · 1 Å) in eV: the scale of the signal-variance barrier and prior."""
        E = np.array(self.E)
        G = np.array(self.G)
        return max(float(E.max() - E.min()), float(np.linalg.norm(G, axis=1).max()) * 1.0, 1e-6)

    def _targets(self, index: torch.Tensor) -> torch.Tensor:
        E = torch.as_tensor(np.array(self.E), dtype=DTYPE, device=self.device)[index] - self.E[0]
        G = torch.as_tensor(np.array(self.G), dtype=DTYPE, device=self.device)[index]
        return torch.cat([E, G.reshape(-1)])

    def _noise(self, n: int, jitter: float) -> torch.Tensor:
        D = self.features.dim
        return torch.cat([torch.full((n,), self.energy_noise_var + jitter, dtype=DTYPE, device=self.device),
                          torch.full((n * D,), self.gradient_noise_var + jitter, dtype=DTYPE, device=self.device)])

    def _hyper(self, signal_var, log_lengths) -> Hyperparameters:
        scale = self.energy_range()
        constant = torch.as_tensor(scale ** 2, dtype=DTYPE, device=self.device)
        return Hyperparameters(constant, signal_var, torch.exp(log_lengths))

    def _factor(self, K: torch.Tensor):
        """Cholesky factor, adding jitter relative to the diagonal when K is numerically singular."""
        L, info = torch.linalg.cholesky_ex(K)
        jitter = 1e-12 * float(K.diagonal().abs().max())
        while int(info) != 0:
            jitter *= 10.0
            if jitter > 1e-3 * float(K.diagonal().abs().max()):
                raise torch.linalg.LinAlgError("kernel matrix is not positive definite")
            L, info = torch.linalg.cholesky_ex(K + jitter * torch.eye(K.shape[0], dtype=DTYPE, device=self.device))
        return L

    # --- hyperparameters ----------------------------------------------------
    def fit(self, subset: Optional[Sequence[int]] = None, optimize: bool = True) -> None:
        """MAP hyperparameters on ``subset`` (default all data), then factor all data for prediction."""
        start = time.perf_counter()
        n = len(self)
        index = torch.arange(n, device=self.device) if subset is None else torch.as_tensor(
            np.asarray(subset), device=self.device)
        scale = self.energy_range()
        sigma_max2 = (self.barrier_factor * scale) ** 2
        if self.log_lengths is None:
            self.length_prior = torch.log(self.features.default_length_scales(self._f))
            self.log_lengths = self.length_prior.clone()
            self.signal_var = scale ** 2
        if optimize and n >= 2:
            f, J, y = self._f[index], self._J[index], self._targets(index)
            noise = self._noise(len(index), 0.0)
            ratio = min(max(self.signal_var / sigma_max2, 1e-12), 1 - 1e-9)
            theta = torch.tensor([math.log(ratio / (1 - ratio))], dtype=DTYPE, device=self.device)
            params = torch.cat([theta, self.log_lengths]).clone().requires_grad_(True)
            log_s2 = math.log(scale ** 2)
            pair_type = self.features.pair_type
            n_types = self.features.n_types
            cache = None
            if CovarianceCache.affordable(len(index), len(index), self.features.dim, n_types):
                cache = CovarianceCache(f, J, f, J, pair_type, n_types)

            def objective():
                theta, log_l = params[0], params[1:]
                signal_var = sigma_max2 * torch.sigmoid(theta)
                hyper = self._hyper(signal_var, log_l)
                K = cache.matrix(hyper) if cache is not None else covariance(f, J, f, J, hyper, pair_type)
                K = K + torch.diag(noise)
                L, info = torch.linalg.cholesky_ex(K)
                if int(info) != 0:
                    return torch.tensor(float("inf"), dtype=DTYPE, device=self.device)
                alpha = torch.cholesky_solve(y.unsqueeze(1), L).squeeze(1)
                nlml = 0.5 * (y @ alpha) + torch.log(L.diagonal()).sum()
                prior = (torch.log(signal_var) - log_s2) ** 2 / (2 * 2.0 ** 2)
                prior = prior + ((log_l - self.length_prior) ** 2).sum() / (2 * 1.0 ** 2)
                barrier = -self.barrier_strength * torch.nn.functional.logsigmoid(-theta)  # -mu log(1 - s/s_max)
                return nlml + prior + barrier

            optimizer = torch.optim.LBFGS([params], max_iter=self.max_fit_iterations, line_search_fn="strong_wolfe",
                                          tolerance_grad=1e-7, tolerance_change=1e-10)

            def closure():
                optimizer.zero_grad()
                value = objective()
                if torch.isfinite(value):
                    value.backward()
                return value

            before = params.detach().clone()
            try:
                optimizer.step(closure)
                ok = bool(torch.isfinite(params).all()) and bool(torch.isfinite(objective().detach()))
            except (torch.linalg.LinAlgError, RuntimeError):
                ok = False
            final = params.detach() if ok else before
            self.signal_var = float(sigma_max2 * torch.sigmoid(final[0]))
            self.log_lengths = final[1:].clone()
        self._factor_all()
        self.seconds += time.perf_counter() - start

    def _factor_all(self) -> None:
        n = len(self)
        hyper = self._hyper(torch.as_tensor(self.signal_var, dtype=DTYPE, device=self.device), self.log_lengths)
        K = covariance(self._f, self._J, self._f, self._J, hyper, self.features.pair_type)
        K = K + torch.diag(self._noise(n, 0.0))
        L = self._factor(K)
        y = self._targets(torch.arange(n, device=self.device))
        self._alpha = torch.cholesky_solve(y.unsqueeze(1), L).squeeze(1)
        self._hyperparameters = hyper

    @property
    def length_scales(self) -> np.ndarray:
        return torch.exp(self.log_lengths).cpu().numpy()

    # --- prediction ---------------------------------------------------------
    def predict(self, x: np.ndarray):
        """Posterior mean energy [B] (eV) and gradient [B, D] (eV/Å) at configurations ``x`` [B, D] (Å)."""
        if self._alpha is None:
            self.fit(optimize=False)
        start = time.perf_counter()
        x = np.atleast_2d(np.asarray(x, dtype=float))
        with torch.no_grad():
            xt = torch.as_tensor(x, dtype=DTYPE, device=self.device)
            f, J = self.features(xt)
            Kx = covariance(f, J, self._f, self._J, self._hyperparameters, self.features.pair_type)
            mean = (Kx @ self._alpha).cpu().numpy()
        B = x.shape[0]
        self.seconds += time.perf_counter() - start
        return mean[:B] + self.E[0], mean[B:].reshape(B, -1)
