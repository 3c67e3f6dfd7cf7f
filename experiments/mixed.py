"""A logistic model with a random intercept per group (caseworker), fitted by maximum likelihood.

Person-rounds are independent given the covariates and the caseworker's effect u ~ N(0, sd²), so
the likelihood factorises over caseworkers, and each caseworker's integral over u is computed by
adaptive Gauss–Hermite quadrature (nodes moved to each caseworker's posterior, so that caseworkers
with many events are integrated as accurately as those with one). The fit gives the fixed effects, the
standard deviation of caseworker effects with a Wald interval on the log scale, and each
caseworker's empirical-Bayes (shrunken) effect: the posterior mean and sd of u.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.polynomial.hermite_e import hermegauss
from scipy import optimize, sparse
from scipy.special import expit, logsumexp

from experiments.person_rounds import z_value

LOG_SD = "log_sd"


@dataclass(frozen=True)
class MixedFit:
    """Fixed effects and log sd (`params`, with covariance `cov`), and per-group posterior effects."""

    params: pd.Series
    cov: pd.DataFrame
    effects: pd.DataFrame  # group, rows, events, posterior_mean, posterior_sd
    log_likelihood: float

    @property
    def sd(self) -> float:
        return float(np.exp(self.params[LOG_SD]))

    def sd_interval(self, level: float = 0.95) -> tuple[float, float]:
        half = z_value(level) * float(np.sqrt(self.cov.loc[LOG_SD, LOG_SD]))
        low, high = np.clip([self.params[LOG_SD] - half, self.params[LOG_SD] + half], -50.0, 50.0)
        return float(np.exp(low)), float(np.exp(high))

    @property
    def fixed(self) -> pd.Series:
        return self.params.drop(LOG_SD)

    @property
    def se(self) -> pd.Series:
        return pd.Series(np.sqrt(np.diag(self.cov)), index=self.params.index)


def standard_normal_nodes(nodes: int) -> tuple[np.ndarray, np.ndarray]:
    """Gauss–Hermite nodes and log weights for an expectation over a standard normal."""
    z, w = hermegauss(nodes)
    return z, np.log(w / np.sqrt(2 * np.pi))


@dataclass(frozen=True)
class _Problem:
    """The marginal likelihood with each group's nodes at centre + scale * z (adaptive quadrature).

    For fixed centres and scales this is an ordinary quadrature rule for the integral over u, with the
    N(0, sd²) density in the integrand, so the likelihood and its derivatives in (beta, log sd)
    are exact for the rule; the fit moves the centres and scales to each group's posterior.
    """

    y: np.ndarray
    X: np.ndarray
    group: np.ndarray
    membership: sparse.csr_matrix  # groups x rows
    z: np.ndarray
    log_w: np.ndarray
    centre: np.ndarray  # per group
    scale: np.ndarray  # per group

    @property
    def nodes(self) -> np.ndarray:
        """The value of u at each node of each group (groups x nodes)."""
        return self.centre[:, None] + self.scale[:, None] * self.z[None, :]

    def posterior(self, theta: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        """Log-likelihood, the posterior weights of the nodes per group, and y - p per (row, node)."""
        beta, sd = theta[:-1], np.exp(theta[-1])
        u = self.nodes
        eta = (self.X @ beta)[:, None] + u[self.group]
        row_ll = self.y[:, None] * eta - np.logaddexp(0.0, eta)
        # log N(u; 0, sd²) - log N(z; 0, 1) + log scale: the change of variable from z to u.
        log_prior = -0.5 * (u / sd) ** 2 - np.log(sd) + 0.5 * self.z[None, :] ** 2 + np.log(self.scale)[:, None]
        group_ll = np.asarray(self.membership @ row_ll) + self.log_w[None, :] + log_prior
        total = logsumexp(group_ll, axis=1)
        weights = np.exp(group_ll - total[:, None])
        return float(total.sum()), weights, self.y[:, None] - expit(eta)

    def prior_score(self, theta: np.ndarray) -> np.ndarray:
        """d log N(u; 0, sd²) / d log sd at each node (groups x nodes)."""
        return (self.nodes / np.exp(theta[-1])) ** 2 - 1.0

    def objective(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        """Negative log-likelihood and its gradient in (beta, log sd)."""
        ll, weights, residual = self.posterior(theta)
        grad_beta = self.X.T @ (residual * weights[self.group]).sum(axis=1)
        grad_log_sd = float((weights * self.prior_score(theta)).sum())
        return -ll, -np.append(grad_beta, grad_log_sd)

    def hessian(self, theta: np.ndarray) -> np.ndarray:
        """The Hessian of the negative log-likelihood (Louis' identity per group: the posterior mean
        of each node's Hessian plus the posterior variance of each node's gradient)."""
        _, weights, residual = self.posterior(theta)
        p = self.y[:, None] - residual
        curvature = (weights[self.group] * p * (1 - p)).sum(axis=1)
        k = self.X.shape[1]
        out = np.zeros((k + 1, k + 1))
        out[:k, :k] = -(self.X * curvature[:, None]).T @ self.X
        out[k, k] = -2.0 * float((weights * (self.prior_score(theta) + 1.0)).sum())
        # Per group and node, the gradient of that node's log-likelihood in (beta, log sd).
        gradient = np.empty((*weights.shape, k + 1))
        for q in range(weights.shape[1]):
            gradient[:, q, :k] = np.asarray(self.membership @ (self.X * residual[:, q : q + 1]))
        gradient[:, :, k] = self.prior_score(theta)
        mean = np.einsum("gq,gqk->gk", weights, gradient)
        second = np.einsum("gq,gqk,gql->kl", weights, gradient, gradient)
        out += second - mean.T @ mean
        return -out

    def modes(self, theta: np.ndarray, steps: int = 25) -> tuple[np.ndarray, np.ndarray]:
        """Each group's posterior mode of u and the sd of the Laplace approximation there (Newton's
        method per group): where adaptive quadrature puts its nodes."""
        beta, variance = theta[:-1], np.exp(2 * theta[-1])
        eta = self.X @ beta
        groups = self.membership.shape[0]
        u = np.zeros(groups)
        for _ in range(steps):
            p = expit(eta + u[self.group])
            gradient = np.bincount(self.group, self.y - p, groups) - u / variance
            curvature = np.bincount(self.group, p * (1 - p), groups) + 1 / variance
            step = gradient / curvature
            u += step
            if np.abs(step).max() < 1e-10:
                break
        return u, 1 / np.sqrt(curvature)

    def posterior_moments(self, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean and sd of each group's u."""
        _, weights, _ = self.posterior(theta)
        u = self.nodes
        mean = (weights * u).sum(axis=1)
        return mean, np.sqrt(np.maximum((weights * u**2).sum(axis=1) - mean**2, 1e-12))


def fit_random_intercept_logit(
    y: np.ndarray,
    X: pd.DataFrame,
    groups: np.ndarray,
    nodes: int = 7,
    start: pd.Series | None = None,
    start_sd: float = 0.3,
    adaptations: int = 5,
) -> MixedFit:
    """Maximum-likelihood random-intercept logit: logit P(y=1) = X beta + u_group, u ~ N(0, sd²).

    Adaptive Gauss–Hermite quadrature: each group's nodes sit at its posterior mode, spread by the
    Laplace sd there; they are placed for the current estimates, the model is fitted, and this is
    repeated until the estimates settle (at most `adaptations` times). `start` (e.g. the
    coefficients of a plain logit) speeds up the fit. Raises ValueError when the optimiser does not
    converge, so that no unconverged estimate is ever reported.
    """
    from threadpoolctl import threadpool_limits

    y = np.asarray(y, dtype=float)
    codes, names = pd.factorize(np.asarray(groups, dtype=object))
    membership = sparse.csr_matrix(
        (np.ones(len(codes)), (codes, np.arange(len(codes)))), shape=(len(names), len(codes))
    )
    z, log_w = standard_normal_nodes(nodes)
    beta0 = np.zeros(X.shape[1]) if start is None else start.reindex(X.columns).fillna(0.0).to_numpy()
    theta = np.append(beta0, np.log(start_sd))
    matrix = X.to_numpy(dtype=float)
    centre, scale = np.zeros(len(names)), np.full(len(names), start_sd)
    with threadpool_limits(limits=1):
        for _ in range(adaptations + 1):
            centre, scale = _Problem(y, matrix, codes, membership, z, log_w, centre, scale).modes(theta)
            problem = _Problem(y, matrix, codes, membership, z, log_w, centre, scale)
            result = optimize.minimize(
                problem.objective, theta, jac=True, hess=problem.hessian, method="trust-exact", options={"gtol": 1e-6}
            )
            if not result.success and np.abs(result.jac).max() > 1e-3:
                raise ValueError(f"the random-intercept logit did not converge: {result.message}")
            settled = np.abs(result.x - theta).max() < 1e-4
            theta = result.x
            if settled:
                break
        centre, scale = problem.modes(theta)
        problem = _Problem(y, matrix, codes, membership, z, log_w, centre, scale)
        ll, _, _ = problem.posterior(theta)
        hessian = problem.hessian(theta)
        mean, sd = problem.posterior_moments(theta)
    index = [*X.columns, LOG_SD]
    cov = pd.DataFrame(np.linalg.pinv(hessian), index=index, columns=index)
    effects = pd.DataFrame(
        {
            "group": np.asarray(names, dtype=object),
            "rows": np.bincount(codes, minlength=len(names)),
            "events": np.bincount(codes, weights=y, minlength=len(names)),
            "posterior_mean": mean,
            "posterior_sd": sd,
        }
    )
    return MixedFit(pd.Series(theta, index=index), cov, effects, ll)
