"""The inVAE module (FinVAE variant of Aliee et al.): tensors in, loss terms out.

Counts are explained by two latent spaces: ``z_i`` (invariant, biological), whose prior is
conditioned on the biological covariates, and ``z_s`` (spurious, technical), whose prior is
conditioned on the technical covariates. Imports only torch: batch size, device and the KL
schedule belong to the training loop.
"""

from __future__ import annotations

from itertools import pairwise
from typing import NamedTuple

import torch
from torch import Tensor, nn

from trainables.config import ModelConfig

VAR_EPS = 1e-4  # floor on every variance, as in the original inVAE
LOG_EPS = 1e-8  # keeps log() finite where a mean underflows to zero


class LossTerms(NamedTuple):
    """Per-batch loss terms, each a scalar averaged over cells.

    Attributes:
        recon: Negative NB log-likelihood, summed over genes.
        kl_i: KL(q(z_i | x, b, t) || p(z_i | b)), summed over dimensions.
        kl_s: KL(q(z_s | x, b, t) || p(z_s | t)), summed over dimensions.
        indep: Squared Frobenius norm of the batch covariance between z_i and z_s means.
    """

    recon: Tensor
    kl_i: Tensor
    kl_s: Tensor
    indep: Tensor

    def total(self, beta: float, indep_weight: float) -> Tensor:
        """Return the training objective ``recon + beta * (kl_i + kl_s) + indep_weight * indep``."""
        return self.recon + beta * (self.kl_i + self.kl_s) + indep_weight * self.indep


def mlp(sizes: list[int], batch_norm: bool, dropout: float) -> nn.Sequential:
    """Stack ``Linear -> [BatchNorm] -> ReLU -> [Dropout]`` blocks through ``sizes``."""
    layers: list[nn.Module] = []
    for n_in, n_out in pairwise(sizes):
        layers.append(nn.Linear(n_in, n_out))
        if batch_norm:
            layers.append(nn.BatchNorm1d(n_out))
        layers.append(nn.ReLU())
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


class ConditionalPrior(nn.Module):
    """Diagonal Gaussian p(z | c): variance from an MLP of the covariates, mean zero or learned.

    With no covariates (``n_covariates == 0``) it is the standard normal.
    """

    def __init__(self, n_covariates: int, z_dim: int, cfg: ModelConfig):
        super().__init__()
        self.z_dim = z_dim
        self.net = mlp([n_covariates, *cfg.hidden], False, cfg.dropout) if n_covariates else None
        width = cfg.hidden[-1]
        self.log_var = nn.Linear(width, z_dim) if n_covariates else None
        self.mean = (
            nn.Linear(width, z_dim) if n_covariates and cfg.prior_mean == "learned" else None
        )

    def forward(self, covariates: Tensor) -> tuple[Tensor, Tensor]:
        """Return the prior mean and variance, each ``(n_cells, z_dim)``."""
        shape = (covariates.shape[0], self.z_dim)
        if self.net is None:
            ones = covariates.new_ones(shape)
            return torch.zeros_like(ones), ones
        h = self.net(covariates)
        var = self.log_var(h).exp() + VAR_EPS
        mean = self.mean(h) if self.mean is not None else torch.zeros_like(var)
        return mean, var


class InVAE(nn.Module):
    """inVAE with a negative-binomial decoder.

    Args:
        n_genes: Number of genes (decoder output width).
        n_bio: Width of the one-hot biological covariates (0: none).
        n_tech: Width of the one-hot technical covariates (0: none).
        cfg: Layer sizes, dropout, batch norm and prior mean.
    """

    def __init__(self, n_genes: int, n_bio: int, n_tech: int, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        z_dim = cfg.z_i_dim + cfg.z_s_dim
        hidden = list(cfg.hidden)
        self.encoder = mlp([n_genes + n_bio + n_tech, *hidden], cfg.batch_norm, cfg.dropout)
        self.enc_mean = nn.Linear(hidden[-1], z_dim)
        self.enc_log_var = nn.Linear(hidden[-1], z_dim)
        self.prior_i = ConditionalPrior(n_bio, cfg.z_i_dim, cfg)
        self.prior_s = ConditionalPrior(n_tech, cfg.z_s_dim, cfg)
        n_decoder_in = z_dim + (n_tech if cfg.inject_covariates else 0)
        self.decoder = mlp([n_decoder_in, *reversed(hidden)], cfg.batch_norm, cfg.dropout)
        self.dec_freq = nn.Linear(hidden[0], n_genes)
        self.log_theta = nn.Parameter(torch.zeros(n_genes))  # gene-wise inverse dispersion

    def gene_layers(self) -> list[nn.Linear]:
        """The gene-wide layers: the encoder's input layer and the decoder's output layer."""
        return [self.encoder[0], self.dec_freq]

    def hidden_layers(self) -> list[nn.Linear]:
        """Layers between hidden units (the latent counts as hidden), the ones Muon is for.

        Excluded: layers reading the network's inputs (counts, one-hot covariates) and heads
        writing distribution parameters (posterior, prior and decoder outputs).
        """
        encoder = _linears(self.encoder)[1:]
        priors = [
            layer for p in (self.prior_i, self.prior_s) if p.net for layer in _linears(p.net)[1:]
        ]
        return [*encoder, *_linears(self.decoder), *priors]

    def encode(self, counts: Tensor, bio: Tensor, tech: Tensor) -> tuple[Tensor, Tensor]:
        """Return the posterior mean and variance, each ``(n_cells, z_i_dim + z_s_dim)``."""
        h = self.encoder(torch.cat([torch.log1p(counts), bio, tech], dim=1))
        return self.enc_mean(h), self.enc_log_var(h).exp() + VAR_EPS

    def decode(self, z: Tensor, tech: Tensor, library: Tensor) -> Tensor:
        """Return the NB mean ``(n_cells, n_genes)``: gene frequencies times library size.

        With ``inject_covariates`` the decoder reads the technical covariates beside z (the
        original's ``inject_covar_in_latent``), so it can explain their effect without z_i.
        """
        if self.cfg.inject_covariates:
            z = torch.cat([z, tech], dim=1)
        return torch.softmax(self.dec_freq(self.decoder(z)), dim=-1) * library

    def forward(self, counts: Tensor, bio: Tensor, tech: Tensor) -> LossTerms:
        """Compute the loss terms for a minibatch.

        In training mode z is sampled with the reparameterisation trick; in eval mode the
        posterior mean is decoded, so evaluation draws no random numbers.

        Args:
            counts: Raw counts, ``(n_cells, n_genes)``.
            bio: One-hot biological covariates, ``(n_cells, n_bio)``.
            tech: One-hot technical covariates, ``(n_cells, n_tech)``.

        Returns:
            The loss terms, each averaged over cells.
        """
        q_mean, q_var = self.encode(counts, bio, tech)
        z = q_mean + q_var.sqrt() * torch.randn_like(q_mean) if self.training else q_mean
        mu = self.decode(z, tech, counts.sum(dim=1, keepdim=True))
        recon = -nb_log_likelihood(counts, mu, self.log_theta.exp()).sum(dim=1)

        zi = self.cfg.z_i_dim
        p_mean_i, p_var_i = self.prior_i(bio)
        p_mean_s, p_var_s = self.prior_s(tech)
        kl_i = gaussian_kl(q_mean[:, :zi], q_var[:, :zi], p_mean_i, p_var_i).sum(dim=1)
        kl_s = gaussian_kl(q_mean[:, zi:], q_var[:, zi:], p_mean_s, p_var_s).sum(dim=1)
        indep = cross_covariance_norm(q_mean[:, :zi], q_mean[:, zi:])
        return LossTerms(recon.mean(), kl_i.mean(), kl_s.mean(), indep)

    @torch.no_grad()
    def latent(self, counts: Tensor, bio: Tensor, tech: Tensor) -> tuple[Tensor, Tensor]:
        """Return the posterior means of ``z_i`` and ``z_s`` (call in eval mode)."""
        mean, _ = self.encode(counts, bio, tech)
        return mean[:, : self.cfg.z_i_dim], mean[:, self.cfg.z_i_dim :]


def _linears(module: nn.Module) -> list[nn.Linear]:
    return [m for m in module.modules() if isinstance(m, nn.Linear)]


def nb_log_likelihood(x: Tensor, mu: Tensor, theta: Tensor) -> Tensor:
    """Elementwise negative-binomial log-likelihood, exact (lgamma) and safe where mu is 0.

    Args:
        x: Observed counts.
        mu: NB means (> = 0), broadcastable to ``x``.
        theta: Inverse dispersions (> 0), broadcastable to ``x``.

    Returns:
        ``log NB(x; mu, theta)`` with the shape of ``x``.
    """
    log_theta_mu = torch.log(theta + mu + LOG_EPS)
    return (
        theta * (torch.log(theta + LOG_EPS) - log_theta_mu)
        + x * (torch.log(mu + LOG_EPS) - log_theta_mu)
        + torch.lgamma(x + theta)
        - torch.lgamma(theta)
        - torch.lgamma(x + 1)
    )


def gaussian_kl(q_mean: Tensor, q_var: Tensor, p_mean: Tensor, p_var: Tensor) -> Tensor:
    """Elementwise KL(N(q_mean, q_var) || N(p_mean, p_var)) between diagonal Gaussians."""
    return 0.5 * (torch.log(p_var / q_var) + (q_var + (q_mean - p_mean) ** 2) / p_var - 1)


def cross_covariance_norm(a: Tensor, b: Tensor) -> Tensor:
    """Squared Frobenius norm of the sample covariance between the columns of a and b.

    Args:
        a: ``(n_cells, d_a)``.
        b: ``(n_cells, d_b)``.

    Returns:
        A scalar, ``||Cov(a, b)||_F^2`` with the unbiased ``1 / (n - 1)`` normalisation.
    """
    a = a - a.mean(dim=0)
    b = b - b.mean(dim=0)
    cov = a.T @ b / (a.shape[0] - 1)
    return (cov**2).sum()
