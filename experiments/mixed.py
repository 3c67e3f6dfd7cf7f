"""A logistic model with a random intercept per group (caseworker), fitted by (restricted) maximum
likelihood.

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


class NotConverged(ValueError):
    """The random-intercept model could not be fitted to these data (too few rounds or events per
    caseworker, say): an analysis that needs it reports that it is not estimable."""


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
class _Data:
    y: np.ndarray
    X: np.ndarray
    group: np.ndarray
    membership: sparse.csr_matrix  # groups x rows
    z: np.ndarray
    log_w: np.ndarray

    def modes(self, theta: np.ndarray, steps: int = 50) -> tuple[np.ndarray, np.ndarray]:
        """Each group's posterior mode of u and the sd of the Laplace approximation there (Newton's
        method per group, steps of at most 1): where adaptive quadrature puts its nodes."""
        beta, variance = theta[:-1], np.exp(2 * theta[-1])
        eta = self.X @ beta
        groups = self.membership.shape[0]
        u = np.zeros(groups)
        for _ in range(steps):
            p = expit(eta + u[self.group])
            gradient = np.bincount(self.group, self.y - p, groups) - u / variance
            curvature = np.bincount(self.group, p * (1 - p), groups) + 1 / variance
            step = np.clip(gradient / curvature, -1.0, 1.0)
            u += step
            if np.abs(step).max() < 1e-10:
                break
        p = expit(eta + u[self.group])
        return u, 1 / np.sqrt(np.bincount(self.group, p * (1 - p), groups) + 1 / variance)

    def at(self, theta: np.ndarray) -> _Problem:
        """The likelihood with each group's nodes placed at its posterior for `theta`."""
        return _Problem(self, *self.modes(theta))


@dataclass(frozen=True)
class _Problem:
    """The marginal likelihood with each group's nodes at centre + scale * z (adaptive quadrature).

    For fixed centres and scales this is an ordinary quadrature rule for the integral over u, with the
    N(0, sd²) density in the integrand, so the likelihood and its derivatives in (beta, log sd)
    are exact for the rule; the fit moves the centres and scales to each group's posterior.
    """

    data: _Data
    centre: np.ndarray  # per group
    scale: np.ndarray  # per group

    @property
    def nodes(self) -> np.ndarray:
        """The value of u at each node of each group (groups x nodes)."""
        return self.centre[:, None] + self.scale[:, None] * self.data.z[None, :]

    def posterior(self, theta: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        """Log-likelihood, the posterior weights of the nodes per group, and y - p per (row, node)."""
        d = self.data
        beta, sd = theta[:-1], np.exp(theta[-1])
        u = self.nodes
        eta = (d.X @ beta)[:, None] + u[d.group]
        row_ll = d.y[:, None] * eta - np.logaddexp(0.0, eta)
        # log N(u; 0, sd²) - log N(z; 0, 1) + log scale: the change of variable from z to u.
        log_prior = -0.5 * (u / sd) ** 2 - np.log(sd) + 0.5 * d.z[None, :] ** 2 + np.log(self.scale)[:, None]
        group_ll = np.asarray(d.membership @ row_ll) + d.log_w[None, :] + log_prior
        total = logsumexp(group_ll, axis=1)
        weights = np.exp(group_ll - total[:, None])
        return float(total.sum()), weights, d.y[:, None] - expit(eta)

    def prior_score(self, theta: np.ndarray) -> np.ndarray:
        """d log N(u; 0, sd²) / d log sd at each node (groups x nodes)."""
        return (self.nodes / np.exp(theta[-1])) ** 2 - 1.0

    def objective(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        """Negative log-likelihood and its gradient in (beta, log sd)."""
        ll, weights, residual = self.posterior(theta)
        grad_beta = self.data.X.T @ (residual * weights[self.data.group]).sum(axis=1)
        grad_log_sd = float((weights * self.prior_score(theta)).sum())
        return -ll, -np.append(grad_beta, grad_log_sd)

    def hessian(self, theta: np.ndarray) -> np.ndarray:
        """The Hessian of the negative log-likelihood (Louis' identity per group: the posterior mean
        of each node's Hessian plus the posterior variance of each node's gradient)."""
        d = self.data
        _, weights, residual = self.posterior(theta)
        p = d.y[:, None] - residual
        curvature = (weights[d.group] * p * (1 - p)).sum(axis=1)
        k = d.X.shape[1]
        out = np.zeros((k + 1, k + 1))
        out[:k, :k] = -(d.X * curvature[:, None]).T @ d.X
        out[k, k] = -2.0 * float((weights * (self.prior_score(theta) + 1.0)).sum())
        # Per group and node, the gradient of that node's log-likelihood in (beta, log sd).
        gradient = np.empty((*weights.shape, k + 1))
        for q in range(weights.shape[1]):
            gradient[:, q, :k] = np.asarray(d.membership @ (d.X * residual[:, q : q + 1]))
        gradient[:, :, k] = self.prior_score(theta)
        mean = np.einsum("gq,gqk->gk", weights, gradient)
        second = np.einsum("gq,gqk,gql->kl", weights, gradient, gradient)
        out += second - mean.T @ mean
        return -out

    def posterior_moments(self, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean and sd of each group's u."""
        _, weights, _ = self.posterior(theta)
        u = self.nodes
        mean = (weights * u).sum(axis=1)
        return mean, np.sqrt(np.maximum((weights * u**2).sum(axis=1) - mean**2, 1e-12))


def maximum_likelihood(data: _Data, theta: np.ndarray, adaptations: int = 5) -> np.ndarray:
    """(beta, log sd) maximising the likelihood: fit with the nodes placed for the current
    estimates, place them again, refit, until the estimates settle."""
    for _ in range(adaptations + 1):
        problem = data.at(theta)
        result = optimize.minimize(
            problem.objective, theta, jac=True, hess=problem.hessian, method="trust-exact", options={"gtol": 1e-6}
        )
        if not result.success and np.abs(result.jac).max() > 1e-3:
            raise NotConverged(f"the random-intercept logit did not converge: {result.message}")
        settled = np.abs(result.x - theta).max() < 1e-4
        theta = result.x
        if settled:
            break
    return theta


def fixed_effects_given_sd(data: _Data, beta: np.ndarray, log_sd: float, steps: int = 30) -> tuple[np.ndarray, float]:
    """The fixed effects maximising the likelihood at a given sd (Newton's method with step halving,
    nodes placed anew each step), and the restricted log-likelihood there: the log-likelihood minus
    half the log-determinant of the fixed effects' information (a Laplace approximation of the
    likelihood with the fixed effects integrated out under a flat prior)."""
    for _ in range(steps):
        theta = np.append(beta, log_sd)
        problem = data.at(theta)
        value, gradient = problem.objective(theta)
        information = problem.hessian(theta)[:-1, :-1]
        step = np.linalg.solve(information, gradient[:-1])
        if np.abs(step).max() < 1e-6:
            return beta, -value - 0.5 * np.linalg.slogdet(information)[1]
        for _ in range(20):
            if problem.objective(np.append(beta - step, log_sd))[0] <= value + 1e-9:
                break
            step = step / 2
        beta = beta - step
    raise NotConverged("the fixed effects of the random-intercept logit did not converge")


def restricted_maximum_likelihood(data: _Data, theta: np.ndarray) -> np.ndarray:
    """(beta, log sd) with log sd maximising the restricted likelihood (`fixed_effects_given_sd`),
    which, unlike maximum likelihood, does not shrink the sd for the degrees of freedom the fixed
    effects use; the fixed effects maximise the likelihood at that sd."""
    beta = {"last": theta[:-1]}

    def negative_restricted(log_sd: float) -> float:
        beta["last"], restricted = fixed_effects_given_sd(data, beta["last"], log_sd)
        return -restricted

    # sd from 0.02 to 3 on the log-odds scale, to 1 %: wider than any plausible caseworker variation.
    result = optimize.minimize_scalar(
        negative_restricted, bounds=(np.log(0.02), np.log(3.0)), method="bounded", options={"xatol": 0.01}
    )
    log_sd = float(result.x)
    return np.append(fixed_effects_given_sd(data, beta["last"], log_sd)[0], log_sd)


def fit_random_intercept_logit(
    y: np.ndarray,
    X: pd.DataFrame,
    groups: np.ndarray,
    nodes: int = 7,
    start: pd.Series | None = None,
    start_sd: float = 0.3,
    method: str = "reml",
) -> MixedFit:
    """Random-intercept logit: logit P(y=1) = X beta + u_group, u ~ N(0, sd²).

    `method` "reml" (default) estimates the sd by restricted maximum likelihood, "ml" by maximum
    likelihood; the fixed effects maximise the likelihood at that sd. Adaptive Gauss–Hermite
    quadrature: each group's nodes sit at its posterior mode, spread by the Laplace sd there.
    `start` (e.g. the coefficients of a plain logit) speeds up the fit. Raises NotConverged when a
    fit does not converge, so that no unconverged estimate is ever reported. The covariance is the
    inverse of the likelihood's Hessian at the estimates.
    """
    from threadpoolctl import threadpool_limits

    if method not in ("reml", "ml"):
        raise ValueError(f"method must be 'reml' or 'ml', not {method!r}")
    y = np.asarray(y, dtype=float)
    codes, names = pd.factorize(np.asarray(groups, dtype=object))
    membership = sparse.csr_matrix(
        (np.ones(len(codes)), (codes, np.arange(len(codes)))), shape=(len(names), len(codes))
    )
    data = _Data(y, X.to_numpy(dtype=float), codes, membership, *standard_normal_nodes(nodes))
    beta0 = np.zeros(X.shape[1]) if start is None else start.reindex(X.columns).fillna(0.0).to_numpy()
    theta = np.append(beta0, np.log(start_sd))
    with threadpool_limits(limits=1):
        theta = maximum_likelihood(data, theta) if method == "ml" else restricted_maximum_likelihood(data, theta)
        problem = data.at(theta)
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
