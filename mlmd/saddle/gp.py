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
optimisation (L-BFGS; autograd through the batched kernel, the closed-form
gradient ``½ (K⁻¹ - α αᵀ)`` of the likelihood with respect to K, see
:class:`NegativeLogLikelihood`) is warm-started from the previous fit. With pruning, the fit sees only a subset
of the data (:func:`mlmd.saddle.distance.pruned_subset`); predictions always
use all of it.

Cost control (issue 17). The factor is kept in point-major order (each
point's energy then its gradient), so a new point appends a block row:
with ``K = L Lᵀ`` for the old points, ``B`` the cross covariance and ``C``
the new block, ``S = L⁻¹ B`` and ``L_c = chol(C - Sᵀ S)`` give the factor of
all points, ``[[L, 0], [Sᵀ, L_c]]`` (:meth:`GaussianProcess.refresh`,
O(n² k) instead of O(n³)). Hyperparameters are then refitted only when
:meth:`GaussianProcess.needs_refit` says so: every ``k`` new points, or when
the energy error of the GP's prediction at the newest point (made before the
point was added) exceeds ``factor`` x the median of the errors made since the
last fit (counting the one that prompted it) and 1e-3 x the energy range.
Between refits sigma_c² stays at the value of the last fit. The posterior
mean and its gradient are contracted with ``alpha`` per pair, ``v_b = J_b α^G_b``, so a prediction costs
O(N P) rather than O(N P D²):

    m(x)  = Σ_b (sigma_c² + k_b) α^E_b + k_b u_bᵀ v_b
    ∇m(x) = J(x)ᵀ Σ_b k_b (Λ⁻¹ v_b - u_b (α^E_b + u_bᵀ v_b))
"""

import math
import time
from typing import Optional, Sequence

import numpy as np
import torch

from .kernel import DTYPE, CovarianceCache, Hyperparameters, covariance

#: a prediction error counts as a jump only above this fraction of the energy range
ERROR_FLOOR_FRACTION = 1e-3


class NegativeLogLikelihood(torch.autograd.Function):
    """``½ yᵀK⁻¹y + ½ log det K`` with the closed-form gradient ``½ (K⁻¹ - α αᵀ)``, α = K⁻¹y.

    One Cholesky factorisation and one inverse from it, instead of autograd
    through the factorisation (several times the cost). Infinite when K is
    not positive definite.
    """

    @staticmethod
    def forward(ctx, K, y):
        L, info = torch.linalg.cholesky_ex(K)
        if int(info) != 0:
            ctx.save_for_backward(None, None)
            return torch.tensor(float("inf"), dtype=K.dtype, device=K.device)
        alpha = torch.cholesky_solve(y.unsqueeze(1), L).squeeze(1)
        ctx.save_for_backward(L, alpha)
        return 0.5 * (y @ alpha) + torch.log(L.diagonal()).sum()

    @staticmethod
    def backward(ctx, grad):
        L, alpha = ctx.saved_tensors
        if L is None:
            return None, None
        return grad * 0.5 * (torch.cholesky_inverse(L) - torch.outer(alpha, alpha)), None


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
        self.incremental = True
        self.track_errors = True
        self._L = None  # point-major Cholesky factor of the first self._n_factored points
        self._n_factored = 0
        self._hyperparameters = None
        self.errors = []  # |E_predicted - E_true| (eV) at each point when it was added (NaN: no prediction)
        self.points_since_fit = 0
        self._fitted_at = 0  # len(self.errors) at the last fit
        self.fits = 0
        self.factorisations = 0
        self.updates = 0

    # --- data ---------------------------------------------------------------
    def add(self, x: np.ndarray, energy: float, gradient: np.ndarray) -> None:
        """Add one observation; when a factor exists, first record the GP's energy error there (eV)."""
        error = float("nan")
        if self.track_errors and self._hyperparameters is not None:
            error = abs(float(self.predict(x)[0][0]) - float(energy))
        self.errors.append(error)
        self.points_since_fit += 1
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
    def needs_refit(self, every: int, error_factor: float) -> bool:
        """Whether the hyperparameters should be refitted: never fitted, ``every`` new points since the last
        fit, or the newest point's prediction error above ``error_factor`` x the median error since the last fit."""
        if self.log_lengths is None or self.points_since_fit >= every:
            return True
        if error_factor <= 0 or self.points_since_fit == 0 or math.isnan(self.errors[-1]):
            return False
        # the reference: errors made with the current hyperparameters (from the point that prompted the fit on)
        earlier = [e for e in self.errors[max(self._fitted_at - 1, 0):-1] if not math.isnan(e)]
        earlier = earlier or [e for e in self.errors[:-1] if not math.isnan(e)]
        if not earlier:
            return False
        floor = ERROR_FLOOR_FRACTION * self.energy_range()
        return self.errors[-1] > max(error_factor * float(np.median(earlier)), floor)

    def fit(self, subset: Optional[Sequence[int]] = None, optimize: bool = True,
            max_iterations: Optional[int] = None) -> None:
        """MAP hyperparameters on ``subset`` (default all data; at most ``max_iterations`` L-BFGS iterations,
        default ``max_fit_iterations``), then factor all data for prediction."""
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
                nlml = NegativeLogLikelihood.apply(K + torch.diag(noise), y)
                prior = (torch.log(signal_var) - log_s2) ** 2 / (2 * 2.0 ** 2)
                prior = prior + ((log_l - self.length_prior) ** 2).sum() / (2 * 1.0 ** 2)
                barrier = -self.barrier_strength * torch.nn.functional.logsigmoid(-theta)  # -mu log(1 - s/s_max)
                return nlml + prior + barrier

            iterations = self.max_fit_iterations if max_iterations is None else max_iterations
            optimizer = torch.optim.LBFGS([params], max_iter=iterations, line_search_fn="strong_wolfe",
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
        self.fits += 1
        self.points_since_fit = 0
        self._fitted_at = len(self.errors)
        self._hyperparameters = self._hyper(torch.as_tensor(self.signal_var, dtype=DTYPE, device=self.device),
                                            self.log_lengths)
        self._L, self._n_factored = None, 0
        self._update_factor()
        self.seconds += time.perf_counter() - start

    def refresh(self) -> None:
        """Bring the factor up to date with all data, keeping the hyperparameters (block-appended rows)."""
        if self._hyperparameters is None:
            self.fit(optimize=False)
            return
        start = time.perf_counter()
        if not self.incremental:
            self._L, self._n_factored = None, 0
        self._update_factor()
        self.seconds += time.perf_counter() - start

    def _point_major(self, K: torch.Tensor, A: int, B: int) -> torch.Tensor:
        """``K`` [A(1+D), B(1+D)] from energies-first order to point-major order on both axes."""
        return K[self._order(A)][:, self._order(B)]

    def _order(self, n: int) -> torch.Tensor:
        """Energies-first index of each point-major position: point a's energy, then its D gradients."""
        D = self.features.dim
        a = torch.arange(n, device=self.device).unsqueeze(1)
        c = torch.arange(D + 1, device=self.device).unsqueeze(0)
        return torch.where(c == 0, a, n + a * D + c - 1).reshape(-1)

    def _block(self, a0: int, a1: int, b0: int, b1: int) -> torch.Tensor:
        """Point-major covariance of points a0:a1 with points b0:b1 (current hyperparameters)."""
        K = covariance(self._f[a0:a1], self._J[a0:a1], self._f[b0:b1], self._J[b0:b1], self._hyperparameters,
                       self.features.pair_type)
        return self._point_major(K, a1 - a0, b1 - b0)

    def _noise_pm(self, n: int) -> torch.Tensor:
        return self._noise(n, 0.0)[self._order(n)]

    def _update_factor(self) -> None:
        """Extend the point-major factor by the points added since; refactor everything when it cannot."""
        n, m = len(self), self._n_factored
        if self._L is not None and m < n:
            B = self._block(0, m, m, n)
            C = self._block(m, n, m, n) + torch.diag(self._noise_pm(n - m))
            S = torch.linalg.solve_triangular(self._L, B, upper=False)
            Lc, info = torch.linalg.cholesky_ex(C - S.T @ S)
            if int(info) == 0:
                top = torch.cat([self._L, torch.zeros_like(B)], dim=1)
                self._L = torch.cat([top, torch.cat([S.T, Lc], dim=1)], dim=0)
                self.updates += 1
            else:
                self._L = None
        elif self._L is None or m != n:
            self._L = None
        if self._L is None:
            self._L = self._factor(self._block(0, n, 0, n) + torch.diag(self._noise_pm(n)))
            self.factorisations += 1
        self._n_factored = n
        D = self.features.dim
        y = self._targets(torch.arange(n, device=self.device))[self._order(n)]
        alpha = torch.cholesky_solve(y.unsqueeze(1), self._L).squeeze(1).reshape(n, D + 1)
        self._alpha = torch.cat([alpha[:, 0], alpha[:, 1:].reshape(-1)])
        self._alpha_energy = alpha[:, 0]
        self._v = torch.einsum("bpd,bd->bp", self._J, alpha[:, 1:])  # v_b = J_b α^G_b  [N, P]

    @property
    def length_scales(self) -> np.ndarray:
        return torch.exp(self.log_lengths).cpu().numpy()

    # --- prediction ---------------------------------------------------------
    def predict(self, x: np.ndarray):
        """Posterior mean energy [B] (eV) and gradient [B, D] (eV/Å) at configurations ``x`` [B, D] (Å)."""
        x = np.atleast_2d(np.asarray(x, dtype=float))
        energy, gradient = self.mean(torch.as_tensor(x, dtype=DTYPE, device=self.device))
        return energy.cpu().numpy(), gradient.cpu().numpy()

    def surface(self, x: torch.Tensor):
        """The posterior mean as a dimer surface on the GP's device: ``x`` [D] (Å) -> (energy, a 0-d tensor
        in eV; gradient [D] in eV/Å), both tensors where ``x`` is, so an inner loop copies no arrays."""
        energy, gradient = self.mean(x.reshape(1, -1))
        return energy[0], gradient[0]

    def mean(self, xt: torch.Tensor):
        """:meth:`predict` on tensors: ``xt`` [B, D] (Å) on the GP's device -> energy [B] (eV) and gradient
        [B, D] (eV/Å) there."""
        if self._alpha is None:
            self.refresh()
        start = time.perf_counter()
        with torch.no_grad():
            f, J = self.features(xt)
            hyper = self._hyperparameters
            inv_l2 = 1.0 / hyper.length_scales[self.features.pair_type] ** 2  # [P]
            diff = f.unsqueeze(1) - self._f.unsqueeze(0)  # [B, N, P]
            u = diff * inv_l2
            k = hyper.signal_var * torch.exp(-0.5 * (diff * u).sum(-1))  # [B, N]
            uv = (u * self._v.unsqueeze(0)).sum(-1)  # u_bᵀ v_b  [B, N]
            energy = (hyper.constant_var + k) @ self._alpha_energy + (k * uv).sum(-1)
            w = (k.unsqueeze(-1) * (inv_l2 * self._v.unsqueeze(0)
                                    - u * (self._alpha_energy.unsqueeze(0) + uv).unsqueeze(-1))).sum(1)  # [B, P]
            gradient = torch.einsum("bpd,bp->bd", J, w)
        self.seconds += time.perf_counter() - start
        return energy + self.E[0], gradient

    def predict_by_covariance(self, x: np.ndarray):
        """The same mean as :meth:`predict` from the full covariance rows ``K(x, X) K⁻¹ y`` (a reference)."""
        if self._alpha is None:
            self.refresh()
        x = np.atleast_2d(np.asarray(x, dtype=float))
        with torch.no_grad():
            f, J = self.features(torch.as_tensor(x, dtype=DTYPE, device=self.device))
            Kx = covariance(f, J, self._f, self._J, self._hyperparameters, self.features.pair_type)
            mean = (Kx @ self._alpha).cpu().numpy()
        B = x.shape[0]
        return mean[:B] + self.E[0], mean[B:].reshape(B, -1)
