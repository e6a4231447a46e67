import pytest
import torch

from trainables.config import ModelConfig
from trainables.model import InVAE, cross_covariance_norm, gaussian_kl, nb_log_likelihood
from trainables.optim import split_parameters

N_GENES, N_BIO, N_TECH = 50, 4, 3


def make_batch(n_cells=16, seed=0):
    gen = torch.Generator().manual_seed(seed)
    counts = torch.poisson(torch.full((n_cells, N_GENES), 3.0), generator=gen)
    bio = torch.nn.functional.one_hot(torch.arange(n_cells) % N_BIO, N_BIO).float()
    tech = torch.nn.functional.one_hot(torch.arange(n_cells) % N_TECH, N_TECH).float()
    return counts, bio, tech


def test_nb_log_likelihood_matches_torch_distributions():
    x = torch.tensor([0.0, 1.0, 5.0, 40.0, 0.0], dtype=torch.float64)
    mu = torch.tensor([0.5, 2.0, 5.0, 30.0, 10.0], dtype=torch.float64)
    theta = torch.tensor([0.3, 1.0, 10.0, 2.0, 100.0], dtype=torch.float64)
    reference = torch.distributions.NegativeBinomial(theta, probs=mu / (mu + theta)).log_prob(x)
    torch.testing.assert_close(nb_log_likelihood(x, mu, theta), reference, rtol=1e-6, atol=1e-6)


def test_nb_log_likelihood_float32_close_to_float64():
    x, mu, theta = torch.tensor([3.0, 0.0]), torch.tensor([2.5, 1e-3]), torch.tensor([4.0, 0.5])
    low = nb_log_likelihood(x, mu, theta)
    high = nb_log_likelihood(x.double(), mu.double(), theta.double())
    torch.testing.assert_close(low.double(), high, rtol=1e-5, atol=1e-5)


def test_nb_log_likelihood_is_finite_where_the_mean_is_zero():
    ll = nb_log_likelihood(torch.tensor([0.0, 2.0]), torch.zeros(2), torch.ones(2))
    assert torch.isfinite(ll).all() and ll[0] == pytest.approx(0.0, abs=1e-6)


def test_gaussian_kl_matches_monte_carlo():
    gen = torch.Generator().manual_seed(1)
    qm, qv = (
        torch.tensor([0.3, -1.0], dtype=torch.float64),
        torch.tensor([0.5, 2.0], dtype=torch.float64),
    )
    pm, pv = (
        torch.tensor([0.0, 0.5], dtype=torch.float64),
        torch.tensor([1.0, 0.7], dtype=torch.float64),
    )
    z = qm + qv.sqrt() * torch.randn(400_000, 2, generator=gen, dtype=torch.float64)
    q = torch.distributions.Normal(qm, qv.sqrt())
    p = torch.distributions.Normal(pm, pv.sqrt())
    monte_carlo = (q.log_prob(z) - p.log_prob(z)).mean(0)
    torch.testing.assert_close(gaussian_kl(qm, qv, pm, pv), monte_carlo, rtol=0.02, atol=0.005)


def test_gaussian_kl_is_zero_for_identical_distributions():
    m, v = torch.randn(5), torch.rand(5) + 0.1
    torch.testing.assert_close(gaussian_kl(m, v, m, v), torch.zeros(5))


def test_cross_covariance_norm():
    a = torch.tensor([[1.0], [2.0], [3.0]])
    assert cross_covariance_norm(a, a).item() == pytest.approx(1.0)  # var = 1
    assert cross_covariance_norm(a, torch.ones(3, 1)).item() == 0.0


@pytest.mark.parametrize("prior_mean", ["zero", "learned"])
def test_forward_returns_scalar_terms(prior_mean):
    cfg = ModelConfig(z_i_dim=6, z_s_dim=2, hidden=(32, 16), prior_mean=prior_mean)
    model = InVAE(N_GENES, N_BIO, N_TECH, cfg)
    terms = model(*make_batch())
    assert all(t.shape == () and torch.isfinite(t) for t in terms)
    assert terms.kl_i >= 0 and terms.kl_s >= 0 and terms.indep >= 0
    terms.total(0.5, 0.1).backward()


def test_latent_shapes_and_eval_is_deterministic():
    model = InVAE(N_GENES, N_BIO, N_TECH, ModelConfig(z_i_dim=6, z_s_dim=2, hidden=(32,))).eval()
    batch = make_batch()
    z_i, z_s = model.latent(*batch)
    assert z_i.shape == (16, 6) and z_s.shape == (16, 2)
    assert torch.equal(model(*batch).recon, model(*batch).recon)


@pytest.mark.parametrize("inject", [False, True])
def test_only_an_injecting_decoder_reads_the_technical_covariates(inject):
    cfg = ModelConfig(z_i_dim=6, z_s_dim=2, hidden=(32,), inject_covariates=inject)
    torch.manual_seed(0)
    model = InVAE(N_GENES, N_BIO, N_TECH, cfg).eval()
    z, library = torch.randn(16, 8), torch.full((16, 1), 100.0)
    tech = make_batch()[2]
    shifted = model.decode(z, tech.roll(1, dims=1), library)
    assert torch.equal(model.decode(z, tech, library), shifted) is not inject
    assert torch.isfinite(model(*make_batch()).total(1.0, 0.1))


def test_no_covariates_gives_a_standard_normal_prior():
    model = InVAE(N_GENES, 0, 0, ModelConfig(z_i_dim=3, z_s_dim=2, hidden=(8,)))
    counts, _, _ = make_batch()
    terms = model(counts, counts.new_zeros(16, 0), counts.new_zeros(16, 0))
    assert torch.isfinite(terms.total(1.0, 0.1))


def test_optimizer_split_muon_takes_only_hidden_matrices():
    model = InVAE(N_GENES, N_BIO, N_TECH, ModelConfig(hidden=(32, 16)))
    muon, adamw = split_parameters(model, muon_gene_layers=False)
    hidden = {id(layer.weight) for layer in model.hidden_layers()}
    assert {id(p) for p in muon} == hidden
    assert all(p.ndim == 2 for p in muon)
    # inputs and heads stay with AdamW
    for layer in (model.encoder[0], model.enc_mean, model.dec_freq, model.prior_i.log_var):
        assert id(layer.weight) not in hidden
    assert {id(p) for p in muon} | {id(p) for p in adamw} == {id(p) for p in model.parameters()}
    muon_all, _ = split_parameters(model, muon_gene_layers=True)
    gene = {id(layer.weight) for layer in model.gene_layers()}
    assert gene <= {id(p) for p in muon_all}


def test_hidden_layers_of_a_two_layer_model():
    model = InVAE(N_GENES, N_BIO, N_TECH, ModelConfig(hidden=(32, 16)))
    shapes = [tuple(layer.weight.shape) for layer in model.hidden_layers()]
    # encoder 32->16; decoder z (30+5)->16 and 16->32; each prior's 32->16
    assert shapes == [(16, 32), (16, 35), (32, 16), (16, 32), (16, 32)]
