"""A logistic model with a random intercept per group (caseworker), fitted by maximum likelihood.

Person-rounds are independent given the covariates and the caseworker's effect u ~ N(0, sd²), so
the likelihood factorises over caseworkers, and each caseworker's integral over u is computed by
Gauss–Hermite quadrature. With about one or two events per caseworker the posterior of u is close
to its prior, so fixed (non-adaptive) nodes are accurate. The fit gives the fixed effects, the
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
    converged: bool

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
    y: np.ndarray
    X: np.ndarray
    group: np.ndarray
    membership: sparse.csr_matrix  # groups x rows
    z: np.ndarray
    log_w: np.ndarray

    def posterior(self, theta: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        """Log-likelihood, the posterior weights of the nodes per group, and y - p per (row, node)."""
        beta, sd = theta[:-1], np.exp(theta[-1])
        eta = (self.X @ beta)[:, None] + sd * self.z[None, :]
        row_ll = self.y[:, None] * eta - np.logaddexp(0.0, eta)
        group_ll = np.asarray(self.membership @ row_ll) + self.log_w[None, :]
        total = logsumexp(group_ll, axis=1)
        weights = np.exp(group_ll - total[:, None])
        return float(total.sum()), weights, self.y[:, None] - expit(eta)

    def objective(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        """Negative log-likelihood and its gradient in (beta, log sd)."""
        ll, weights, residual = self.posterior(theta)
        weighted = residual * weights[self.group]
        grad_beta = self.X.T @ weighted.sum(axis=1)
        grad_log_sd = float((weighted * self.z[None, :]).sum()) * np.exp(theta[-1])
        return -ll, -np.append(grad_beta, grad_log_sd)

    def hessian(self, theta: np.ndarray) -> np.ndarray:
        """The Hessian of the negative log-likelihood (Louis' identity per group: the posterior mean
        of each node's Hessian plus the posterior variance of each node's gradient)."""
        _, weights, residual = self.posterior(theta)
        sd = np.exp(theta[-1])
        row_weights = weights[self.group]  # rows x nodes
        p = self.y[:, None] - residual
        curvature = row_weights * p * (1 - p)
        scaled_z = sd * self.z[None, :]
        k = self.X.shape[1]
        out = np.empty((k + 1, k + 1))
        out[:k, :k] = -(self.X * curvature.sum(axis=1)[:, None]).T @ self.X
        out[:k, k] = out[k, :k] = -self.X.T @ (curvature * scaled_z).sum(axis=1)
        out[k, k] = -(curvature * scaled_z**2).sum() + (row_weights * residual * scaled_z).sum()
        # Per group and node, the gradient of that node's log-likelihood in (beta, log sd).
        nodes = len(self.z)
        gradient = np.empty((self.membership.shape[0], nodes, k + 1))
        for q in range(nodes):
            gradient[:, q, :k] = np.asarray(self.membership @ (self.X * residual[:, q : q + 1]))
            gradient[:, q, k] = np.asarray(self.membership @ (residual[:, q] * scaled_z[0, q]))
        mean = np.einsum("gq,gqk->gk", weights, gradient)
        second = np.einsum("gq,gqk,gql->kl", weights, gradient, gradient)
        out += second - mean.T @ mean
        return -out


def fit_random_intercept_logit(
    y: np.ndarray,
    X: pd.DataFrame,
    groups: np.ndarray,
    nodes: int = 9,
    start: pd.Series | None = None,
    start_sd: float = 0.3,
) -> MixedFit:
    """Maximum-likelihood random-intercept logit: logit P(y=1) = X beta + u_group, u ~ N(0, sd²).

    `start` (e.g. the coefficients of a plain logit) speeds up the fit. Raises ValueError when the
    optimiser does not converge, so that no unconverged estimate is ever reported.
    """
    from threadpoolctl import threadpool_limits

    y = np.asarray(y, dtype=float)
    codes, names = pd.factorize(np.asarray(groups, dtype=object))
    membership = sparse.csr_matrix((np.ones(len(codes)), (codes, np.arange(len(codes)))), shape=(len(names), len(codes)))
    z, log_w = standard_normal_nodes(nodes)
    problem = _Problem(y, X.to_numpy(dtype=float), codes, membership, z, log_w)
    beta0 = np.zeros(X.shape[1]) if start is None else start.reindex(X.columns).fillna(0.0).to_numpy()
    theta0 = np.append(beta0, np.log(start_sd))
    with threadpool_limits(limits=1):
        result = optimize.minimize(
            problem.objective, theta0, jac=True, hess=problem.hessian, method="trust-exact", options={"gtol": 1e-6}
        )
        hessian = problem.hessian(result.x)
        ll, weights, _ = problem.posterior(result.x)
    if not result.success and np.abs(result.jac).max() > 1e-3:
        raise ValueError(f"the random-intercept logit did not converge: {result.message}")
    index = [*X.columns, LOG_SD]
    cov = pd.DataFrame(np.linalg.pinv(hessian), index=index, columns=index)
    u = np.exp(result.x[-1]) * z
    mean = weights @ u
    effects = pd.DataFrame(
        {
            "group": np.asarray(names, dtype=object),
            "rows": np.bincount(codes, minlength=len(names)),
            "events": np.bincount(codes, weights=y, minlength=len(names)),
            "posterior_mean": mean,
            "posterior_sd": np.sqrt(np.maximum(weights @ u**2 - mean**2, 0.0)),
        }
    )
    return MixedFit(pd.Series(result.x, index=index), cov, effects, ll, bool(result.success))
