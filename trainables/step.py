"""Optimizer steps on minibatches, eager or replayed from a captured CUDA graph.

A step of this small model is a few hundred tiny kernels: on a GPU its cost is kernel launches
and Python, not arithmetic. :class:`GraphedStep` captures a whole epoch (every step's forward,
backward, gradient clipping and optimizer steps, then the validation pass) into one CUDA graph
and replays it, so an epoch costs one launch and one read of its sums, and the CPU is free for
the trainings beside it. The optimizers (one Muon per hidden matrix, AdamW for the rest) step
on streams of their own, so their small kernels run side by side. Graph replay runs the same
kernels on the same inputs as eager execution, so where a run starts or resumes does not change
its bits.
"""

from __future__ import annotations

import torch
from torch import Tensor

from trainables.concurrency import Lane, drawing_from
from trainables.config import TrainConfig
from trainables.latent import CELLS_PER_PASS
from trainables.model import InVAE, LossTerms

WARMUP_STEPS = 3  # eager steps (whole epochs) before capture: optimizer state must exist
N_TRAIN_SUMS = 6  # loss, recon, kl_i, kl_s, indep (cell-weighted), grad_norm of the steps
N_VAL_SUMS = 4  # recon, kl_i, kl_s, indep of the validation cells (cell-weighted)


def kl_weight(step: float | Tensor, start: float, end: float, warmup_steps: int) -> float | Tensor:
    """KL weight β at an optimizer step: linear from ``start`` to ``end`` over ``warmup_steps``.

    Works on a Python number or a tensor (the step counter inside a CUDA graph).
    """
    if warmup_steps == 0:
        return end + 0 * step
    fraction = step / warmup_steps
    fraction = fraction.clamp(max=1.0) if isinstance(fraction, Tensor) else min(fraction, 1.0)
    return start + (end - start) * fraction


def minibatch_loss(
    model: InVAE,
    tensors: tuple[Tensor, Tensor, Tensor],
    idx: Tensor,
    beta: Tensor,
    indep_weight: float,
) -> tuple[Tensor, LossTerms]:
    """Gather a minibatch; return its objective and loss terms (what ``torch.compile`` fuses)."""
    counts, bio, tech = (t[idx] for t in tensors)
    terms = model(counts, bio, tech)
    return terms.total(beta, indep_weight), terms


def compiled_loss():
    """``minibatch_loss`` compiled by Inductor, with eager (ATen) random numbers.

    ``fallback_random`` keeps dropout and the reparameterisation noise on torch's own generator,
    so their draws match eager execution and are CUDA-graph safe. A process that runs many
    trials (Ray reuses them) compiles once per model shape; past Dynamo's recompile limit it
    would silently fall back to eager kernels, changing a trial's numerics with the process's
    history, so the limit is raised and hitting it is an error.
    """
    import torch._dynamo.config as dynamo_config
    import torch._inductor.config as inductor_config

    inductor_config.fallback_random = True
    dynamo_config.recompile_limit = max(dynamo_config.recompile_limit, 1024)
    dynamo_config.fail_on_recompile_limit_hit = True
    return torch.compile(minibatch_loss, fullgraph=True, dynamic=False)


def clip_gradients(model: InVAE, max_norm: float | None) -> Tensor:
    """Clip the global gradient norm to ``max_norm`` (if set); return the norm before clipping."""
    params = [p for p in model.parameters() if p.grad is not None]
    if max_norm is None:
        return torch.nn.utils.get_total_norm([p.grad for p in params])
    return torch.nn.utils.clip_grad_norm_(params, max_norm, foreach=True)


class EagerStep:
    """Training steps run op by op, and an epoch's validation pass.

    An epoch accumulates into ``sums``: the steps' loss terms (``N_TRAIN_SUMS``), then the
    validation cells' terms at the posterior mean (``N_VAL_SUMS``). Zero it between epochs.

    Args:
        model: The module, in training mode.
        optimizers: Stepped in order after each backward pass.
        tensors: Full training ``(counts, bio, tech)`` on the device.
        validation: Validation ``(counts, bio, tech)`` on the device.
        cfg: Loss weights, β schedule and gradient clipping.
        lane: The training's streams (``trainables.concurrency``).
        noise: The training's generator for dropout and the reparameterisation noise.
    """

    def __init__(
        self,
        model: InVAE,
        optimizers: list[torch.optim.Optimizer],
        tensors: tuple[Tensor, Tensor, Tensor],
        validation: tuple[Tensor, Tensor, Tensor],
        cfg: TrainConfig,
        lane: Lane,
        noise: torch.Generator,
    ):
        self.model, self.optimizers, self.tensors, self.cfg = model, optimizers, tensors, cfg
        self.validation, self.lane, self.noise = validation, lane, noise
        device = tensors[0].device
        self.loss = compiled_loss() if cfg.compile and device.type == "cuda" else minibatch_loss
        self.sums = torch.zeros(N_TRAIN_SUMS + N_VAL_SUMS, device=device)
        self.step_counter = torch.zeros((), device=device)  # optimizer steps taken, as float
        on_cuda = device.type == "cuda"
        self.optimizer_streams = lane.optimizer_streams(len(optimizers)) if on_cuda else None

    def __call__(self, idx: Tensor, step: int) -> None:
        """Take one step on the cells ``idx`` (the run's ``step``-th optimizer step)."""
        self.step_counter.fill_(step)
        with drawing_from(self.noise):
            self._compute(idx)

    def run_epoch(self, batches: Tensor, step: int) -> None:
        """Take a step per row of ``batches`` (cell indices), then the validation pass.

        The first step is the run's ``step``-th.
        """
        for i, idx in enumerate(batches):
            self(idx, step + i)
        self._validate()

    def _compute(self, idx: Tensor) -> None:
        cfg = self.cfg
        beta = kl_weight(self.step_counter, cfg.beta_start, cfg.beta_end, cfg.beta_warmup_steps)
        loss, terms = self.loss(self.model, self.tensors, idx, beta, cfg.indep_weight)
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = clip_gradients(self.model, cfg.grad_clip)
        self._step_optimizers()
        weighted = torch.stack([loss.detach(), *(t.detach() for t in terms)]) * idx.numel()
        self.sums[:5] += weighted
        self.sums[5] += grad_norm

    @torch.no_grad()
    def _validate(self) -> None:
        """Add the validation cells' loss terms at the posterior mean (eval mode: no noise)."""
        self.model.eval()
        counts, bio, tech = self.validation
        n_cells = counts.shape[0]
        for start in range(0, n_cells, CELLS_PER_PASS):
            chunk = slice(start, start + CELLS_PER_PASS)
            terms = self.model(counts[chunk], bio[chunk], tech[chunk])
            weight = min(CELLS_PER_PASS, n_cells - start)
            self.sums[N_TRAIN_SUMS:] += torch.stack(list(terms)) * weight
        self.model.train()

    def _step_optimizers(self) -> None:
        """Step every optimizer; on a GPU each on its own stream, so their kernels overlap.

        The optimizers update disjoint parameters, and each one's kernels run in its usual
        order on its stream, so the results are those of stepping them one after another.
        """
        if self.optimizer_streams is None:
            for opt in self.optimizers:
                opt.step()
            return
        main = torch.cuda.current_stream()
        for opt, stream in zip(self.optimizers, self.optimizer_streams, strict=True):
            stream.wait_stream(main)
            with torch.cuda.stream(stream):
                opt.step()
        for stream in self.optimizer_streams:
            main.wait_stream(stream)


class GraphedStep(EagerStep):
    """Epochs (steps and validation) replayed from one CUDA graph, captured after eager warm-up.

    Every epoch must have as many minibatches, all of one size, as the first (the loop drops
    incomplete ones). The step counter advances inside the graph, one per step.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.static_batches: Tensor | None = None
        self.eager_steps = 0

    def run_epoch(self, batches: Tensor, step: int) -> None:
        """Run an epoch: eagerly during warm-up, then by graph replay."""
        if self.graph is None and self.eager_steps < WARMUP_STEPS:
            self.eager_steps += batches.shape[0]
            side = self.lane.warmup
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                super().run_epoch(batches, step)
            torch.cuda.current_stream().wait_stream(side)
            return
        if self.graph is None:
            self._capture(batches)
        self.static_batches.copy_(batches)
        self.step_counter.fill_(step)
        self.graph.replay()

    def _capture(self, batches: Tensor) -> None:
        self.static_batches = batches.clone()
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=True)  # the graph allocates and owns the gradients
        self.graph = torch.cuda.CUDAGraph()
        # Captured on the lane's stream, not torch's one default capture stream, which graphs of
        # trainings replayed side by side would share (measured: they hang). Thread-local
        # capture lets the process's other trainings go on working meanwhile.
        with (
            drawing_from(self.noise),
            torch.cuda.graph(
                self.graph, stream=self.lane.capture, capture_error_mode="thread_local"
            ),
        ):
            for idx in self.static_batches:
                self._compute(idx)
                self.step_counter += 1
            self._validate()


def make_step(
    model: InVAE,
    optimizers: list[torch.optim.Optimizer],
    tensors: tuple[Tensor, Tensor, Tensor],
    validation: tuple[Tensor, Tensor, Tensor],
    cfg: TrainConfig,
    lane: Lane,
    noise: torch.Generator,
) -> EagerStep:
    """Graphed epochs on CUDA when ``cfg.cuda_graphs`` is set, else eager steps."""
    on_cuda = tensors[0].device.type == "cuda"
    cls = GraphedStep if on_cuda and cfg.cuda_graphs else EagerStep
    return cls(model, optimizers, tensors, validation, cfg, lane, noise)
