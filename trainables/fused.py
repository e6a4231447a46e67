"""Trials of one shape trained as one batched computation, each keeping its own bits.

A :class:`TrialGroup` holds ``width`` slots. Every parameter, optimizer state and BatchNorm
statistic of the inVAE module is stacked along a leading slot dimension, so a step of all
slots is one batched forward (``baddbmm``), one backward, one gradient clipping, one
Newton-Schulz over every same-shape Muon matrix and one AdamW over the stacked parameters,
with per-slot learning rates, weight decays, β schedules, dropout rates and steps. Slots share
no arithmetic: every reduction runs within a slot, and the random numbers of a slot are a
function of its trial's seed and step alone (``trainables.noise``).

What a slot's bits can still depend on is the *width* (kernels are chosen by the whole
tensor's shape; ``TRAPS``: bmm at width 1 is mm, reductions split differently across widths),
never the values or positions of the other slots. So the width is fixed per run
(``TrainConfig.group_width``, recorded in ``run.json``): a trial alone in a group of 16 has
the bits it has beside 15 others, in any slot. Empty slots compute on placeholder values.

The inVAE module (``trainables.model``) stays the one definition of the architecture: a
group reads its structure (layer order, batch norm, dropout, priors) from a template module,
initialises every slot by building that module from the trial's seed, and hands back each
slot's weights as the module's ``state_dict``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from trainables.concurrency import PROCESS_LOCK, Lane
from trainables.config import TrainConfig
from trainables.latent import CELLS_PER_PASS
from trainables.model import VAR_EPS, InVAE, gaussian_kl, nb_log_likelihood
from trainables.noise import normal, stream_keys, uniform
from trainables.optim import model_summary, split_parameters

BN_EPS = 1e-5  # nn.BatchNorm1d's defaults
BN_MOMENTUM = 0.1
MUON_NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)  # torch.optim.Muon's defaults
MUON_NS_STEPS = 5
MUON_EPS = 1e-7
ADAMW_EPS = 1e-8
CLIP_EPS = 1e-6  # torch.nn.utils.clip_grad_norm_'s
N_TRAIN_SUMS = 6  # loss, recon, kl_i, kl_s, indep (cell-weighted), grad_norm of the steps
N_VAL_SUMS = 4  # recon, kl_i, kl_s, indep of the validation cells (cell-weighted)
MAX_GPU_GROUP_WIDTH = 16
"""The widest group a sweep forms on a GPU unless its train config sets ``group_width``.

On an H200 a group of 16 trains 16 trials in 1.03x the time of one (``docs/performance.md``);
more trials at once form more groups, which train side by side (four of 16: 1.4x as fast as
one). Wider groups were not measured.
"""
REPARAMETERISATION_SITE = 0  # noise site of z's reparameterisation; dropout layers follow

# Per-slot hyperparameters, the columns of a group's ``hyper`` table.
HYPER = (
    "learning_rate",
    "muon_weight_decay",
    "muon_momentum",
    "adamw_weight_decay",
    "adamw_beta1",
    "adamw_beta2",
    "beta_start",
    "beta_end",
    "beta_warmup_steps",
    "indep_weight",
    "grad_clip",
    "dropout",
)


def hyperparameters(cfg: TrainConfig) -> list[float]:
    """A trial's row of the ``hyper`` table (``HYPER`` order); no clipping is an infinite norm."""
    opt = cfg.optimizer
    return [
        cfg.learning_rate,
        opt.muon_weight_decay,
        opt.muon_momentum,
        opt.adamw_weight_decay,
        *opt.adamw_betas,
        cfg.beta_start,
        cfg.beta_end,
        float(cfg.beta_warmup_steps),
        cfg.indep_weight,
        math.inf if cfg.grad_clip is None else cfg.grad_clip,
        cfg.model.dropout,
    ]


@dataclass(frozen=True)
class GroupShape:
    """What trials must share to train in one group: shapes, structure, process settings.

    Everything else of a trial's config (seed, learning rate, weight decays, momenta, β
    schedule, loss weights, clipping, dropout rate, number of epochs) is per slot.
    """

    n_genes: int
    n_bio: int
    n_tech: int
    n_train: int
    n_val: int
    z_i_dim: int
    z_s_dim: int
    hidden: tuple[int, ...]
    has_dropout: bool
    batch_norm: bool
    prior_mean: str
    inject_covariates: bool
    muon_gene_layers: bool
    batch_size: int
    deterministic: bool
    cpu_threads: int
    cuda_matmul_precision: str
    compile: bool
    cuda_graphs: bool
    device: str
    width: int

    @classmethod
    def of(cls, cfg: TrainConfig, sizes: tuple[int, int, int, int, int], device: torch.device):
        """The shape of a trial: its config, ``(n_genes, n_bio, n_tech, n_train, n_val)``."""
        m = cfg.model
        return cls(
            *sizes,
            m.z_i_dim,
            m.z_s_dim,
            tuple(m.hidden),
            m.dropout > 0,
            m.batch_norm,
            m.prior_mean,
            m.inject_covariates,
            cfg.optimizer.muon_gene_layers,
            min(cfg.batch_size, sizes[3]),
            cfg.deterministic,
            cfg.cpu_threads,
            cfg.cuda_matmul_precision,
            cfg.compile if device.type == "cuda" else cfg.cpu_compile,
            cfg.cuda_graphs and device.type == "cuda",
            str(device),
            cfg.group_width,
        )


class StackedInVAE:
    """The inVAE forward pass on parameters stacked along a leading slot dimension.

    Reads the architecture from a template :class:`InVAE`; holds no tensors.

    Args:
        template: An inVAE module of the group's shape (any weights).
    """

    def __init__(self, template: InVAE):
        self.cfg = template.cfg
        self.template = template
        self.noise_sites = {
            name: REPARAMETERISATION_SITE + 1 + i
            for i, (name, _) in enumerate(
                (n, m) for n, m in template.named_modules() if isinstance(m, nn.Dropout)
            )
        }

    def loss_terms(
        self,
        params: dict[str, Tensor],
        buffers: dict[str, Tensor],
        tensors: tuple[Tensor, Tensor, Tensor],
        noise: tuple[Tensor, Tensor, Tensor] | None,
    ) -> tuple[Tensor, list[tuple[str, Tensor, Tensor]]]:
        """Per-slot loss terms ``(4, W)`` (recon, kl_i, kl_s, indep) and BatchNorm statistics.

        Args:
            params: Stacked parameters by the module's names.
            buffers: Stacked BatchNorm running statistics (used in evaluation only).
            tensors: ``(counts, bio, tech)``, each ``(W, n_cells, width)``.
            noise: ``(seeds, steps, dropout)`` of the slots for a training pass (dropout and
                z's reparameterisation), or None to evaluate at the posterior mean with the
                running statistics.

        Returns:
            The terms averaged over cells, and per BatchNorm layer of a training pass
            ``(name, batch mean, unbiased batch variance)`` for its running statistics.
        """
        counts, bio, tech = tensors
        stats: list[tuple[str, Tensor, Tensor]] = []
        run = _Pass(self, params, buffers, noise, stats)
        h = run.mlp("encoder", torch.cat([torch.log1p(counts), bio, tech], dim=2))
        q_mean = run.linear("enc_mean", h)
        q_var = run.linear("enc_log_var", h).exp() + VAR_EPS
        z = q_mean
        if noise is not None:
            keys = stream_keys(noise[0], noise[1], REPARAMETERISATION_SITE)
            z = q_mean + q_var.sqrt() * normal(keys, tuple(q_mean.shape[1:]))
        if self.cfg.inject_covariates:
            z = torch.cat([z, tech], dim=2)
        logits = run.linear("dec_freq", run.mlp("decoder", z))
        mu = torch.softmax(logits, dim=-1) * counts.sum(dim=2, keepdim=True)
        theta = params["log_theta"].exp().unsqueeze(1)
        recon = -nb_log_likelihood(counts, mu, theta).sum(dim=2)

        zi = self.cfg.z_i_dim
        p_mean_i, p_var_i = run.prior("prior_i", bio, zi)
        p_mean_s, p_var_s = run.prior("prior_s", tech, self.cfg.z_s_dim)
        kl_i = gaussian_kl(q_mean[..., :zi], q_var[..., :zi], p_mean_i, p_var_i).sum(dim=2)
        kl_s = gaussian_kl(q_mean[..., zi:], q_var[..., zi:], p_mean_s, p_var_s).sum(dim=2)
        indep = _cross_covariance_norm(q_mean[..., :zi], q_mean[..., zi:])
        return torch.stack([recon.mean(dim=1), kl_i.mean(dim=1), kl_s.mean(dim=1), indep]), stats


class _Pass:
    """One forward pass of :class:`StackedInVAE`: layer by layer, reading the template."""

    def __init__(self, model, params, buffers, noise, stats):
        self.model, self.params, self.buffers = model, params, buffers
        self.noise, self.stats = noise, stats
        self.modules = dict(model.template.named_modules())

    def linear(self, name: str, h: Tensor) -> Tensor:
        weight, bias = self.params[f"{name}.weight"], self.params[f"{name}.bias"]
        return torch.baddbmm(bias.unsqueeze(1), h, weight.transpose(1, 2))

    def mlp(self, name: str, h: Tensor) -> Tensor:
        for i, layer in enumerate(self.modules[name]):
            path = f"{name}.{i}"
            if isinstance(layer, nn.Linear):
                h = self.linear(path, h)
            elif isinstance(layer, nn.BatchNorm1d):
                h = self.batch_norm(path, h)
            elif isinstance(layer, nn.ReLU):
                h = torch.relu(h)
            elif isinstance(layer, nn.Dropout):
                h = self.dropout(path, h)
            else:  # the template is built by trainables.model.mlp: nothing else is in it
                raise TypeError(f"{path}: no stacked form of {type(layer).__name__}")
        return h

    def batch_norm(self, name: str, h: Tensor) -> Tensor:
        weight = self.params[f"{name}.weight"].unsqueeze(1)
        bias = self.params[f"{name}.bias"].unsqueeze(1)
        if self.noise is None:
            mean = self.buffers[f"{name}.running_mean"].unsqueeze(1)
            var = self.buffers[f"{name}.running_var"].unsqueeze(1)
        else:
            var, mean = torch.var_mean(h, dim=1, keepdim=True, correction=0)
            n = h.shape[1]
            self.stats.append((name, mean.squeeze(1), var.squeeze(1) * (n / (n - 1))))
        return (h - mean) * torch.rsqrt(var + BN_EPS) * weight + bias

    def dropout(self, name: str, h: Tensor) -> Tensor:
        if self.noise is None:
            return h
        seeds, steps, rate = self.noise
        keys = stream_keys(seeds, steps, self.model.noise_sites[name])
        rate = rate.view(-1, 1, 1)
        kept = uniform(keys, tuple(h.shape[1:])) >= rate
        return torch.where(kept, h / (1 - rate), 0.0)

    def prior(self, name: str, covariates: Tensor, z_dim: int) -> tuple[Tensor, Tensor]:
        shape = (*covariates.shape[:2], z_dim)
        if covariates.shape[2] == 0:
            ones = covariates.new_ones(shape)
            return torch.zeros_like(ones), ones
        h = self.mlp(f"{name}.net", covariates)
        var = self.linear(f"{name}.log_var", h).exp() + VAR_EPS
        learned = f"{name}.mean.weight" in self.params
        mean = self.linear(f"{name}.mean", h) if learned else torch.zeros_like(var)
        return mean, var


def _cross_covariance_norm(a: Tensor, b: Tensor) -> Tensor:
    """Per slot, ``||Cov(a, b)||_F^2`` of ``(W, n, d_a)`` and ``(W, n, d_b)``: ``(W,)``."""
    a = a - a.mean(dim=1, keepdim=True)
    b = b - b.mean(dim=1, keepdim=True)
    cov = torch.bmm(a.transpose(1, 2), b) / (a.shape[1] - 1)
    return (cov**2).sum(dim=(1, 2))


def kl_weights(steps: Tensor, hyper: dict[str, Tensor]) -> Tensor:
    """Per-slot β at their steps: linear from ``beta_start`` to ``beta_end`` over the warm-up."""
    warmup = hyper["beta_warmup_steps"]
    fraction = torch.where(warmup > 0, (steps / warmup.clamp(min=1)).clamp(max=1.0), 1.0)
    return hyper["beta_start"] + (hyper["beta_end"] - hyper["beta_start"]) * fraction


def kl_weight(step: int, cfg: TrainConfig) -> float:
    """β at an optimizer step of one trial (what its metrics report)."""
    if cfg.beta_warmup_steps == 0:
        return cfg.beta_end
    fraction = min(step / cfg.beta_warmup_steps, 1.0)
    return cfg.beta_start + (cfg.beta_end - cfg.beta_start) * fraction


def configure_compiler() -> None:
    """Make ``torch.compile`` safe for a process that trains many groups.

    A process that runs many trials (Ray reuses them) compiles once per group shape; past
    Dynamo's recompile limit it would silently fall back to eager kernels, changing a trial's
    numerics with the process's history, so the limit is raised and hitting it is an error.
    """
    import torch._dynamo.config as dynamo_config

    dynamo_config.recompile_limit = max(dynamo_config.recompile_limit, 1024)
    dynamo_config.fail_on_recompile_limit_hit = True


def _per_slot(values: Tensor, like: Tensor) -> Tensor:
    """``(W,)`` values shaped to broadcast over a stacked ``(W, ...)`` tensor."""
    return values.view(-1, *([1] * (like.dim() - 1)))


def clip_per_slot(grads: dict[str, Tensor], max_norms: Tensor) -> tuple[dict[str, Tensor], Tensor]:
    """Clip each slot's gradients to its global norm ``max_norms[w]`` (inf: no clipping).

    As ``torch.nn.utils.clip_grad_norm_`` does for one model, per slot: the norm of the
    norms of the stores' gradients, scaled by ``min(1, max_norm / (norm + 1e-6))``.

    Returns:
        The clipped gradients and the ``(W,)`` norms before clipping.
    """
    norms = torch.stack([g.flatten(1).norm(dim=1) for g in grads.values()], dim=1).norm(dim=1)
    scale = (max_norms / (norms + CLIP_EPS)).clamp(max=1.0)
    return {n: g * _per_slot(scale, g) for n, g in grads.items()}, norms


def newton_schulz_dtype(device: torch.device) -> torch.dtype:
    """The precision of Muon's Newton-Schulz products on a device.

    bfloat16 on a GPU, as ``torch.optim.Muon``; float32 on the CPU, where bfloat16 matrix
    products are emulated on CPUs without bfloat16 instructions (2-core AMD EPYC: a step's
    Newton-Schulz 33 ms in bfloat16, 2.2 ms in float32). Recorded in ``run.json``
    (``model.muon_newton_schulz_dtype``).
    """
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def newton_schulz(updates: Tensor, dtype: torch.dtype) -> Tensor:
    """Orthogonalise a batch of matrices ``(K, rows, cols)`` as ``torch.optim.Muon`` does one.

    In ``dtype`` (Muon's is bfloat16; see :func:`newton_schulz_dtype`), each matrix scaled to
    spectral norm <= 1 by its Frobenius norm, five quintic iterations with Muon's
    coefficients, on the wide orientation. ``torch.optim.Muon`` steps one matrix at a time (a
    batched path is proposed upstream, not merged as of torch 2.13:
    https://github.com/pytorch/pytorch/pull/195566); here every same-shape matrix of every
    slot is one batched product per iteration. Each matrix's result depends on it alone.
    """
    a, b, c = MUON_NS_COEFFICIENTS
    x = updates.to(dtype)
    tall = updates.shape[1] > updates.shape[2]
    if tall:
        x = x.transpose(1, 2)
    x = x / x.norm(dim=(1, 2), keepdim=True).clamp(min=MUON_EPS)
    for _ in range(MUON_NS_STEPS):
        gram = torch.bmm(x, x.transpose(1, 2))
        update = torch.baddbmm(gram, gram, gram, beta=b, alpha=c)
        x = torch.baddbmm(x, update, x, beta=a)
    return x.transpose(1, 2) if tall else x


class TrialGroup:
    """Up to ``shape.width`` trials of one :class:`GroupShape`, stepped together.

    A trial takes a free slot at an epoch boundary (:meth:`admit`), trains one epoch per
    :meth:`run_epoch` until it leaves (:meth:`release`); its slot's state is read with
    :meth:`slot_state`. The slots' epochs always run together, each at its own step.

    Args:
        shape: What the group's trials share (``GroupShape.of``).
        tensors: Training ``(counts, bio, tech)`` on the device, ``(n_train, ...)``.
        validation: Validation ``(counts, bio, tech)`` on the device.
        template: An inVAE module of the shape (its weights fill the empty slots).
        lane: The CUDA streams the group's warm-up and graph capture run on.
    """

    def __init__(
        self,
        shape: GroupShape,
        tensors: tuple[Tensor, Tensor, Tensor],
        validation: tuple[Tensor, Tensor, Tensor],
        template: InVAE,
        lane: Lane,
    ):
        self.shape, self.tensors, self.validation = shape, tensors, validation
        self.lane = lane
        self.device = tensors[0].device
        self.model = StackedInVAE(template)
        self.template_state = {k: v.detach().clone() for k, v in template.state_dict().items()}
        muon = {id(p) for p in split_parameters(template, shape.muon_gene_layers)[0]}
        named = list(template.named_parameters())
        self.muon_names = [n for n, p in named if id(p) in muon]
        self.adamw_names = [n for n, p in named if id(p) not in muon]
        w = shape.width

        def stacked(tensor: Tensor) -> Tensor:
            return torch.zeros(w, *tensor.shape, dtype=tensor.dtype, device=self.device)

        self.params = {n: stacked(p).requires_grad_() for n, p in named}  # autograd leaves
        self.buffers = {n: stacked(b) for n, b in template.named_buffers()}
        self.momentum = {n: torch.zeros_like(self.params[n]) for n in self.muon_names}
        self.exp_avg = {n: torch.zeros_like(self.params[n]) for n in self.adamw_names}
        self.exp_avg_sq = {n: torch.zeros_like(self.params[n]) for n in self.adamw_names}
        zeros = torch.zeros(w, device=self.device)
        self.hyper = {k: zeros.clone() for k in HYPER}
        self.seeds = torch.zeros(w, dtype=torch.int64, device=self.device)
        self.steps = torch.zeros(w, dtype=torch.int64, device=self.device)
        self.sums = torch.zeros(w, N_TRAIN_SUMS + N_VAL_SUMS, device=self.device)
        self.occupied: list[bool] = [False] * w
        for slot in range(w):
            self.release(slot)
        self._loss = self._compiled(self._train_loss) if shape.compile else self._train_loss
        self._update = self._compiled(self._apply_step) if shape.compile else self._apply_step
        self._val = self._compiled(self._val_terms) if shape.compile else self._val_terms
        self._graph: torch.cuda.CUDAGraph | None = None
        self._static_batches: Tensor | None = None
        self._eager_epochs = 0

    @staticmethod
    def _compiled(fn: Callable) -> Callable:
        configure_compiler()
        return torch.compile(fn, fullgraph=True, dynamic=False)

    # --- slots ---------------------------------------------------------------------------

    def free_slots(self) -> list[int]:
        """The slots no trial holds."""
        return [i for i, taken in enumerate(self.occupied) if not taken]

    @torch.no_grad()
    def admit(
        self,
        cfg: TrainConfig,
        model_state: dict[str, Tensor],
        optimizer_state: dict[str, Any] | None = None,
        step: int = 0,
        slot: int | None = None,
    ) -> int:
        """Put a trial into a free slot; return the slot.

        Args:
            cfg: The trial's config (of this group's shape).
            model_state: Its module's ``state_dict`` (freshly initialised, or resumed).
            optimizer_state: Its optimizer state from :meth:`slot_state` (None: fresh).
            step: Optimizer steps it has taken.
            slot: Which free slot (None: the first).
        """
        slot = self.free_slots()[0] if slot is None else slot
        if self.occupied[slot]:
            raise ValueError(f"slot {slot} is taken")
        self._write_slot(slot, model_state, optimizer_state)
        self.occupied[slot] = True
        for key, value in zip(HYPER, hyperparameters(cfg), strict=True):
            self.hyper[key][slot] = value
        self.seeds[slot] = cfg.seed
        self.steps[slot] = step
        return slot

    @torch.no_grad()
    def release(self, slot: int) -> None:
        """Free a slot; it computes on the template's weights until a trial takes it."""
        self.occupied[slot] = False
        self._write_slot(slot, self.template_state, None)

    def _write_slot(
        self, slot: int, model_state: dict[str, Tensor], optimizer_state: dict[str, Any] | None
    ) -> None:
        for name, tensor in {**self.params, **self.buffers}.items():
            tensor[slot].copy_(model_state[name])
        moments = {"momentum": self.momentum, "exp_avg": self.exp_avg}
        moments["exp_avg_sq"] = self.exp_avg_sq
        for kind, tensors in moments.items():
            for name, tensor in tensors.items():
                if optimizer_state is None:
                    tensor[slot].zero_()
                else:
                    tensor[slot].copy_(optimizer_state[kind][name])

    def slot_state(self, slot: int) -> tuple[dict[str, Tensor], dict[str, Any]]:
        """A slot's module ``state_dict`` and optimizer state, copied to the CPU."""

        def copy(stacked: Tensor) -> Tensor:  # a copy on the CPU too: the slot trains on
            return stacked[slot].detach().to("cpu", copy=True)

        named = {**self.params, **self.buffers}
        model = {n: copy(named[n]) for n in self.template_state}
        optimizer = {
            "momentum": {n: copy(t) for n, t in self.momentum.items()},
            "exp_avg": {n: copy(t) for n, t in self.exp_avg.items()},
            "exp_avg_sq": {n: copy(t) for n, t in self.exp_avg_sq.items()},
        }
        return model, optimizer

    def placeholder_batches(self) -> Tensor:
        """``(W, n_batches, batch_size)`` minibatches of the cells in order, for every slot.

        Occupied slots' rows are replaced by their trials' shuffled minibatches; empty slots
        compute on these.
        """
        size = self.shape.batch_size
        n_batches = self.shape.n_train // size
        cells = torch.arange(n_batches * size, device=self.device).view(1, n_batches, size)
        return cells.repeat(self.shape.width, 1, 1)

    def model_summary(self) -> dict[str, Any]:
        """What ``optim.model_summary`` says, and the precision of Muon's Newton-Schulz."""
        dtype = str(newton_schulz_dtype(self.device)).removeprefix("torch.")
        return {
            **model_summary(self.model.template, self.muon_names),
            "muon_newton_schulz_dtype": dtype,
        }

    # --- epochs --------------------------------------------------------------------------

    def run_epoch(self, batches: Tensor) -> Tensor:
        """Every slot takes a step per minibatch, then the validation pass; return the sums.

        Args:
            batches: ``(W, n_batches, batch_size)`` cell indices, a row of minibatches per slot.

        Returns:
            ``(W, N_TRAIN_SUMS + N_VAL_SUMS)`` on the device: the steps' cell-weighted loss
            terms and gradient norms, then the validation cells' cell-weighted terms.
        """
        if not self.shape.cuda_graphs:
            self._epoch(batches)
            return self.sums
        if self._graph is None and self._eager_epochs < 1:  # compiles, allocates the state
            self._eager_epochs += 1
            side = self.lane.warmup
            side.wait_stream(torch.cuda.current_stream())
            with PROCESS_LOCK, torch.cuda.stream(side):
                self._epoch(batches)
            torch.cuda.current_stream().wait_stream(side)
            return self.sums
        if self._graph is None:
            self._static_batches = batches.clone()
            self._graph = torch.cuda.CUDAGraph()
            # Captured on the lane's stream, not torch's one default capture stream, which
            # graphs replayed side by side would share; thread-local capture lets the
            # process's other trainings go on meanwhile.
            with (
                PROCESS_LOCK,
                torch.cuda.graph(
                    self._graph, stream=self.lane.capture, capture_error_mode="thread_local"
                ),
            ):
                self._epoch(self._static_batches)
        self._static_batches.copy_(batches)
        self._graph.replay()
        return self.sums

    def _epoch(self, batches: Tensor) -> None:
        self.sums.zero_()
        for i in range(batches.shape[1]):
            self._step(batches[:, i])
        self._validate()

    def _step(self, idx: Tensor) -> None:
        objective, totals, terms, stats = self._loss(
            self.params, self.buffers, self.tensors, idx, self.seeds, self.steps, self.hyper
        )
        leaves = list(self.params.values())
        grads = dict(zip(self.params, torch.autograd.grad(objective, leaves), strict=True))
        self._update(grads, stats, totals, terms, idx.shape[1])

    def _train_loss(self, params, buffers, tensors, idx, seeds, steps, hyper):
        # The minibatches are gathered here, inside the compiled code, which reads the cells
        # where they are used rather than copying them out first (H200, width 16: three
        # gather kernels, 84 us of a step's 2.7 ms).
        batch = tuple(t[idx] for t in tensors)
        noise = (seeds, steps, hyper["dropout"])
        terms, stats = self.model.loss_terms(params, buffers, batch, noise)
        recon, kl_i, kl_s, indep = terms
        beta = kl_weights(steps.to(torch.float32), hyper)
        totals = recon + beta * (kl_i + kl_s) + hyper["indep_weight"] * indep
        stats = [(name, mean.detach(), var.detach()) for name, mean, var in stats]
        return totals.sum(), totals.detach(), terms.detach(), stats

    @torch.no_grad()
    def _apply_step(self, grads, stats, totals, terms, n_cells: int) -> None:
        """Clip each slot's gradients, step Muon and AdamW, update BatchNorm statistics."""
        hyper = self.hyper
        grads, grad_norm = clip_per_slot(grads, hyper["grad_clip"])
        lr = hyper["learning_rate"]
        self._muon(grads, lr)
        self._adamw(grads, lr)
        for name, mean, var in stats:
            for key, batch in (("running_mean", mean), ("running_var", var)):
                running = self.buffers[f"{name}.{key}"]
                running.mul_(1 - BN_MOMENTUM).add_(batch * BN_MOMENTUM)
            self.buffers[f"{name}.num_batches_tracked"].add_(1)
        weighted = torch.cat([totals.unsqueeze(0), terms]) * n_cells
        self.sums[:, :5] += weighted.T
        self.sums[:, 5] += grad_norm
        self.steps += 1

    def _muon(self, grads: dict[str, Tensor], lr: Tensor) -> None:
        """Muon on every Muon matrix: one Newton-Schulz per shape over all slots' matrices."""
        hyper = self.hyper
        by_shape: dict[tuple[int, ...], list[str]] = {}
        updates: dict[str, Tensor] = {}
        for name in self.muon_names:
            grad, buf = grads[name], self.momentum[name]
            momentum = _per_slot(hyper["muon_momentum"], grad)
            buf.lerp_(grad, 1 - momentum)
            updates[name] = grad.lerp(buf, momentum)  # Nesterov
            by_shape.setdefault(tuple(grad.shape[1:]), []).append(name)
        decay = 1 - lr * hyper["muon_weight_decay"]
        for names in by_shape.values():
            stacked = torch.cat([updates[n] for n in names])
            orthogonal = newton_schulz(stacked, newton_schulz_dtype(self.device))
            for name, update in zip(names, orthogonal.split(self.shape.width), strict=True):
                param = self.params[name]
                rows, cols = param.shape[1:]
                adjusted = lr * (0.2 * math.sqrt(max(rows, cols)))  # "match_rms_adamw"
                param.mul_(_per_slot(decay, param))
                param.sub_(update.to(param.dtype) * _per_slot(adjusted, param))

    def _adamw(self, grads: dict[str, Tensor], lr: Tensor) -> None:
        """AdamW (decoupled weight decay, bias-corrected) on every other parameter."""
        hyper = self.hyper
        t = (self.steps + 1).to(torch.float32)
        beta1, beta2 = hyper["adamw_beta1"], hyper["adamw_beta2"]
        step_size = lr / (1 - beta1**t)
        bias_correction2_sqrt = (1 - beta2**t).sqrt()
        decay = 1 - lr * hyper["adamw_weight_decay"]
        for name in self.adamw_names:
            param, grad = self.params[name], grads[name]
            m, v = self.exp_avg[name], self.exp_avg_sq[name]
            param.mul_(_per_slot(decay, param))
            m.lerp_(grad, _per_slot(1 - beta1, grad))
            v.mul_(_per_slot(beta2, grad)).add_(grad * grad * _per_slot(1 - beta2, grad))
            denom = v.sqrt() / _per_slot(bias_correction2_sqrt, v) + ADAMW_EPS
            param.sub_(m / denom * _per_slot(step_size, param))

    @torch.no_grad()
    def _validate(self) -> None:
        counts, bio, tech = self.validation
        n_cells, w = counts.shape[0], self.shape.width
        for start in range(0, n_cells, CELLS_PER_PASS):
            chunk = slice(start, start + CELLS_PER_PASS)
            stacked = tuple(t[chunk].expand(w, -1, -1) for t in (counts, bio, tech))
            terms = self._val(self.params, self.buffers, stacked)
            self.sums[:, N_TRAIN_SUMS:] += terms.T * min(CELLS_PER_PASS, n_cells - start)

    def _val_terms(self, params, buffers, tensors):
        terms, _ = self.model.loss_terms(params, buffers, tensors, None)
        return terms
