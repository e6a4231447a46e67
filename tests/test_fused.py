"""Trials trained as one batched computation (``trainables.fused``): each keeps its own bits."""

import dataclasses
import math

import pytest
import torch

from trainables.concurrency import Lane, new_stream
from trainables.config import ModelConfig, TrainConfig
from trainables.fused import (
    GroupShape,
    StackedInVAE,
    TrialGroup,
    clip_per_slot,
    kl_weight,
    newton_schulz,
    newton_schulz_dtype,
)
from trainables.model import InVAE
from trainables.noise import normal, stream_keys, uniform
from trainables.train import GroupRunner, NonFiniteLossError, Trial, train, train_group

N_GENES, N_BIO, N_TECH = 12, 3, 2


@pytest.fixture(
    params=[False, pytest.param(True, marks=pytest.mark.slow)], ids=["eager", "cpu-compiled"]
)
def group_config(tiny_train_config, request):
    """A group of 4 on the CPU; its slow variant compiles the group (``cpu_compile``)."""
    return dataclasses.replace(tiny_train_config, group_width=4, cpu_compile=request.param)


def fingerprints(outcomes):
    return [o.fingerprint for o in outcomes]


# --- random numbers --------------------------------------------------------------------------


def test_a_draw_depends_on_its_own_key_alone_not_on_the_batch_of_keys():
    seeds = torch.tensor([5, 7, 5, 9])
    steps = torch.tensor([0, 3, 0, 3])
    keys = stream_keys(seeds, steps, site=2)
    batch = normal(keys, (16, 8))
    for w in range(4):
        alone = normal(stream_keys(seeds[w : w + 1], steps[w : w + 1], site=2), (16, 8))
        assert torch.equal(batch[w], alone[0])
    assert torch.equal(batch[0], batch[2])  # same seed and step: the same draws
    assert not torch.equal(batch[0], batch[1])


def test_seed_step_and_site_each_change_the_draws():
    one = torch.tensor([1])
    base = uniform(stream_keys(one, one, 0), (64,))
    others = (stream_keys(one + 1, one, 0), stream_keys(one, one + 1, 0), stream_keys(one, one, 1))
    for keys in others:
        assert not torch.equal(uniform(keys, (64,)), base)


def test_uniform_and_normal_draws_have_their_distributions():
    keys = stream_keys(torch.arange(4), torch.zeros(4, dtype=torch.int64), 0)
    u = uniform(keys, (50_000,))
    assert u.min() > 0 and u.max() < 1
    assert u.mean().item() == pytest.approx(0.5, abs=0.01)
    z = normal(keys, (50_000,))
    assert z.mean().item() == pytest.approx(0.0, abs=0.02)
    assert z.std().item() == pytest.approx(1.0, abs=0.02)
    assert torch.isfinite(z).all()


# --- optimizer steps against torch's own ----------------------------------------------------


def newton_schulz_float64(matrix):
    """Muon's iteration on one matrix in float64, written out (torch's casts to bfloat16)."""
    a, b, c = 3.4445, -4.7750, 2.0315
    x = matrix.double().T if matrix.shape[0] > matrix.shape[1] else matrix.double()
    x = x / x.norm().clamp(min=1e-7)
    for _ in range(5):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.T if matrix.shape[0] > matrix.shape[1] else x


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_batched_newton_schulz_matches_torch_muon_per_matrix(dtype):
    """bfloat16: torch's Muon to its rounding; float32: the exact iteration to float32's."""
    from torch.optim._muon import _zeropower_via_newtonschulz

    gen = torch.Generator().manual_seed(0)
    for shape in ((6, 16, 16), (5, 16, 7)):  # square, and tall (iterated transposed)
        updates = torch.randn(*shape, generator=gen)
        batched = newton_schulz(updates, dtype)
        assert batched.dtype == dtype
        for i in range(shape[0]):
            single = _zeropower_via_newtonschulz(updates[i], (3.4445, -4.7750, 2.0315), 5, 1e-7)
            close = 2e-2 if dtype == torch.bfloat16 else 5e-2  # bfloat16's rounding of torch's
            torch.testing.assert_close(batched[i].float(), single.float(), atol=close, rtol=close)
            if dtype == torch.float32:
                exact = newton_schulz_float64(updates[i])
                torch.testing.assert_close(batched[i].double(), exact, atol=1e-5, rtol=1e-4)


def test_newton_schulz_runs_in_bfloat16_on_a_gpu_and_float32_on_the_cpu_as_recorded():
    assert newton_schulz_dtype(torch.device("cuda", 0)) == torch.bfloat16
    assert newton_schulz_dtype(torch.device("cpu")) == torch.float32
    group, _, _ = small_group()
    assert group.model_summary()["muon_newton_schulz_dtype"] == "float32"


def small_group(width=2, cfg=None):
    cfg = cfg or TrainConfig(device="cpu", group_width=width, model=ModelConfig(hidden=(16, 8)))
    torch.manual_seed(0)
    template = InVAE(N_GENES, N_BIO, N_TECH, cfg.model)
    sizes = (N_GENES, N_BIO, N_TECH, 64, 16)
    shape = GroupShape.of(cfg, sizes, torch.device("cpu"))
    data = torch.rand(64, N_GENES), torch.zeros(64, N_BIO), torch.zeros(64, N_TECH)
    group = TrialGroup(shape, data, data, template, Lane(torch.device("cpu")))
    return group, template, cfg


def test_muon_and_adamw_of_a_slot_step_as_torch_optim_does_each_at_its_own_rate(monkeypatch):
    # torch's Muon multiplies in bfloat16; so does a group's here (on the CPU it uses float32)
    monkeypatch.setattr("trainables.fused.newton_schulz_dtype", lambda device: torch.bfloat16)
    group, template, cfg = small_group()
    rates = [1e-3, 4e-3]
    for lr in rates:
        group.admit(dataclasses.replace(cfg, learning_rate=lr), template.state_dict())
    models = [InVAE(N_GENES, N_BIO, N_TECH, cfg.model) for _ in rates]
    optimizers = []
    for model, lr in zip(models, rates, strict=True):
        model.load_state_dict(template.state_dict())
        named = dict(model.named_parameters())
        opt = cfg.optimizer
        muon = torch.optim.Muon(
            [named[n] for n in group.muon_names],
            lr=lr,
            weight_decay=opt.muon_weight_decay,
            momentum=opt.muon_momentum,
            adjust_lr_fn="match_rms_adamw",
        )
        adamw = torch.optim.AdamW(
            [named[n] for n in group.adamw_names],
            lr=lr,
            betas=opt.adamw_betas,
            weight_decay=opt.adamw_weight_decay,
        )
        optimizers.append((muon, adamw))
    gen = torch.Generator().manual_seed(1)
    for _ in range(3):
        grads = {n: torch.randn(p.shape, generator=gen) for n, p in group.params.items()}
        with torch.no_grad():
            group._muon(grads, group.hyper["learning_rate"])
            group._adamw(grads, group.hyper["learning_rate"])
        group.steps += 1
        for slot, (model, (muon, adamw)) in enumerate(zip(models, optimizers, strict=True)):
            for name, param in model.named_parameters():
                param.grad = grads[name][slot].clone()
            muon.step()
            adamw.step()
    for slot, model in enumerate(models):
        state, _ = group.slot_state(slot)
        for name, param in model.named_parameters():
            torch.testing.assert_close(state[name], param.detach(), atol=2e-5, rtol=1e-4)


def test_each_slot_is_clipped_to_its_own_norm():
    grads = {"a": torch.full((3, 4, 5), 10.0), "b": torch.full((3, 7), 10.0)}
    grads["a"][2], grads["b"][2] = 0.01, 0.01
    clipped, norms = clip_per_slot(grads, torch.tensor([1.0, math.inf, 1.0]))
    for slot in range(3):
        expected = torch.nn.utils.get_total_norm([g[slot] for g in grads.values()])
        assert norms[slot].item() == pytest.approx(expected.item(), rel=1e-6)
    after = torch.nn.utils.get_total_norm([g[0] for g in clipped.values()])
    assert after.item() == pytest.approx(1.0, rel=1e-4)
    for name in grads:  # no clipping, and a norm under the limit: untouched
        assert torch.equal(clipped[name][1], grads[name][1])
        assert torch.equal(clipped[name][2], grads[name][2])


class FailingCudart:
    """``torch.cuda.cudart()`` as a GPU out of stream resources answers."""

    def cudaStreamCreate(self, handle_address):
        return 2

    def cudaGetErrorString(self, error):
        return "out of memory" if error == 2 else "?"


@pytest.mark.parametrize("connections", [None, "32"])
def test_a_stream_that_cannot_be_made_says_why_and_what_the_environment_has_to_do_with_it(
    monkeypatch, connections
):
    monkeypatch.setattr(torch.cuda, "cudart", FailingCudart)
    if connections is None:
        monkeypatch.delenv("CUDA_DEVICE_MAX_CONNECTIONS", raising=False)
    else:
        monkeypatch.setenv("CUDA_DEVICE_MAX_CONNECTIONS", connections)
    with pytest.raises(RuntimeError) as raised:
        new_stream()
    message = str(raised.value)
    assert message.startswith("cudaStreamCreate failed: out of memory (CUDA error 2)")
    assert ("CUDA_DEVICE_MAX_CONNECTIONS=32" in message) == (connections is not None)


def test_kl_weight_warms_up_linearly_per_step():
    cfg = TrainConfig(beta_start=0.4, beta_end=1.0, beta_warmup_steps=250)
    assert [kl_weight(s, cfg) for s in (0, 125, 250, 1000)] == pytest.approx([0.4, 0.7, 1.0, 1.0])
    assert kl_weight(0, dataclasses.replace(cfg, beta_warmup_steps=0)) == 1.0


def test_the_stacked_forward_is_the_modules_forward():
    group, template, cfg = small_group()
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for buffer in template.buffers():
            if buffer.is_floating_point():
                buffer.copy_(torch.rand(buffer.shape, generator=gen) + 0.5)
    group.admit(cfg, template.state_dict(), slot=1)
    counts = torch.poisson(torch.full((10, N_GENES), 2.0), generator=gen)
    bio = torch.nn.functional.one_hot(torch.arange(10) % N_BIO, N_BIO).float()
    tech = torch.nn.functional.one_hot(torch.arange(10) % N_TECH, N_TECH).float()
    stacked = tuple(t.expand(2, -1, -1) for t in (counts, bio, tech))
    terms, _ = StackedInVAE(template).loss_terms(group.params, group.buffers, stacked, None)
    template.eval()
    expected = template(counts, bio, tech)
    expected = torch.stack(list(expected))
    torch.testing.assert_close(terms[:, 1].detach(), expected, rtol=1e-5, atol=1e-5)


# --- a trial's bits whatever shares its computation ----------------------------------------


def test_a_trial_has_its_bits_alone_and_beside_others_in_any_slot(group_config, tiny_data):
    trial = group_config
    companions = [
        dataclasses.replace(trial, seed=7, learning_rate=3e-3),
        dataclasses.replace(trial, seed=8, model=dataclasses.replace(trial.model, dropout=0.3)),
        dataclasses.replace(trial, seed=9, beta_warmup_steps=0, n_epochs=1, grad_clip=None),
    ]
    (alone,) = train_group([Trial(trial)], tiny_data)
    for position in (0, 2, 3):
        cfgs = [*companions]
        cfgs.insert(position, trial)
        outcomes = train_group([Trial(c) for c in cfgs], tiny_data)
        assert outcomes[position].fingerprint == alone.fingerprint, position
    assert alone.train_config.group_width == 4
    assert alone.fingerprint == train(trial, tiny_data).fingerprint


def test_replicates_in_one_group_are_identical(group_config, tiny_data):
    outcomes = train_group([Trial(group_config)] * 3, tiny_data)
    assert len({o.fingerprint.weights for o in outcomes}) == 1
    assert outcomes[0].fingerprint == outcomes[1].fingerprint == outcomes[2].fingerprint


def test_a_trial_joining_a_running_group_has_its_bits(group_config, tiny_data):
    (alone,) = train_group([Trial(group_config)], tiny_data)
    shape = GroupRunner.shape_of(group_config, tiny_data)
    ends = {}
    runner = GroupRunner(shape, tiny_data)
    early = dataclasses.replace(group_config, seed=3, n_epochs=5)
    runner.add(Trial(early), lambda r: ends.setdefault("early", r))
    runner.run_epoch()
    runner.run_epoch()
    runner.add(Trial(group_config), lambda r: ends.setdefault("late", r))
    while runner.running:
        runner.run_epoch()
    runner.wait()
    assert ends["late"].fingerprint == alone.fingerprint
    assert ends["early"].fingerprint == train(early, tiny_data).fingerprint


def test_a_diverging_trial_leaves_its_group_and_the_others_keep_their_bits(group_config, tiny_data):
    bad = dataclasses.replace(group_config, seed=1, learning_rate=1e12, grad_clip=None)
    failed, good = train_group([Trial(bad), Trial(group_config)], tiny_data)
    assert isinstance(failed, NonFiniteLossError)
    assert good.fingerprint == train(group_config, tiny_data).fingerprint


def test_a_checkpoint_taken_in_a_group_resumes_alone_bit_for_bit(group_config, tiny_data):
    cfg = dataclasses.replace(group_config, n_epochs=4)
    states = []
    report = lambda row, state=None: states.append(state)  # noqa: E731
    other = Trial(dataclasses.replace(cfg, seed=11))
    train_group([other, Trial(cfg, report=report, checkpoint_every=2)], tiny_data)
    resumed = train(cfg, tiny_data, resume=states[1])
    assert resumed.fingerprint == train(cfg, tiny_data).fingerprint
    assert resumed.timing["epochs_run"] == 2


def test_trials_of_other_shapes_or_too_many_are_refused(group_config, tiny_data):
    model = dataclasses.replace(group_config.model, z_i_dim=5)
    wider = dataclasses.replace(group_config, model=model)
    with pytest.raises(ValueError, match="2 shapes"):
        train_group([Trial(group_config), Trial(wider)], tiny_data)
    with pytest.raises(ValueError, match="do not fit a group of width 4"):
        train_group([Trial(group_config)] * 5, tiny_data)


def test_a_kept_group_trains_the_next_trials_with_the_bits_of_a_new_one(group_config, tiny_data):
    from trainables import train as training

    cfg = dataclasses.replace(group_config, group_width=2)
    first = train(cfg, tiny_data)
    kept = training._IDLE_RUNNERS[-1]
    assert train(cfg, tiny_data).fingerprint == first.fingerprint  # on the kept group
    assert training._IDLE_RUNNERS[-1] is kept
    flipped = dataclasses.replace(tiny_data.train, counts=tiny_data.train.counts[::-1].copy())
    other = dataclasses.replace(tiny_data, train=flipped)  # same sizes, other cells' order
    on_kept = train(cfg, other)
    assert training._IDLE_RUNNERS[-1] is kept and kept.prepared is other
    training._IDLE_RUNNERS.clear()
    fresh = train(cfg, other)
    assert training._IDLE_RUNNERS[-1] is not kept
    assert on_kept.fingerprint == fresh.fingerprint != first.fingerprint
    assert train(cfg, tiny_data).fingerprint == first.fingerprint  # and back


def test_a_trial_in_any_slot_keeps_its_bits_where_cpu_products_depend_on_alignment(tiny_data):
    """A latent of 30 + 5 dimensions over 240 cells: MKL's product of (30 x 240) and (240 x 5)
    gives another slot other bits unless MKL is in its strict reproducible mode (MKL_CBWR)."""
    model = ModelConfig(z_i_dim=30, z_s_dim=5, hidden=(16, 16))
    trial = TrainConfig(n_epochs=1, batch_size=240, device="cpu", group_width=2, model=model)
    assert tiny_data.train.n_cells == 240  # one minibatch of all cells
    (alone,) = train_group([Trial(trial)], tiny_data)
    other = dataclasses.replace(trial, seed=7)
    second = train_group([Trial(other), Trial(trial)], tiny_data)[1]
    assert second.fingerprint == alone.fingerprint
