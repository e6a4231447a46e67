"""One inVAE training run: ``train(cfg, data, report=...) -> RunResult``. No Ray.

W&B is imported only when a run asks to log (``use_wandb=True``, through
``trainables.wandb_run``). ``main()`` trains once with the default config files.

The whole dataset lives on the training device for the whole run; minibatches are gathered
from a permutation drawn by a seeded ``torch.Generator``, so no randomness is unseeded. A run
that is given the same config, data and environment produces the same bits.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from trainables.concurrency import PROCESS_LOCK, Lane, fork_default_generator, host_values, lane
from trainables.config import DataConfig, TrainConfig
from trainables.fingerprint import fingerprint
from trainables.latent import embedding_integration, latent_means
from trainables.model import InVAE, LossTerms
from trainables.optim import build_optimizers, model_summary
from trainables.prepared import PreparedData, Split
from trainables.provenance import get_environment_info
from trainables.run_record import RunResult
from trainables.seeding import set_seed, torch_generator
from trainables.step import N_TRAIN_SUMS, EagerStep, kl_weight, make_step

if TYPE_CHECKING:
    from trainables.wandb_run import WandbSettings

# report(metrics) every epoch; report(metrics, state) on checkpoint epochs.
Report = Callable[..., None]


class NonFiniteLossError(RuntimeError):
    """A loss term became NaN or infinite; the message names the epoch and the terms."""


@dataclass(frozen=True)
class DeviceSplit:
    """One split's tensors on the training device."""

    counts: Tensor  # (n_cells, n_genes)
    bio: Tensor  # (n_cells, n_bio)
    tech: Tensor  # (n_cells, n_tech)

    def tensors(self) -> tuple[Tensor, Tensor, Tensor]:
        """``(counts, bio, tech)``."""
        return self.counts, self.bio, self.tech

    @classmethod
    def from_split(cls, split: Split, device: torch.device) -> DeviceSplit:
        """Copy a host split to ``device`` once."""
        # A copy: arrays shipped through Ray's object store are read-only.
        return cls(*(torch.tensor(a, device=device) for a in (split.counts, split.bio, split.tech)))


def resolve_device(name: str) -> torch.device:
    """Map ``auto | cpu | cuda | cuda:N`` to a device; ``auto`` takes CUDA when available."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} was asked for, but CUDA is not available")
    return torch.device(name)


def train(
    train_cfg: TrainConfig,
    data: DataConfig | PreparedData,
    report: Report | None = None,
    *,
    checkpoint_every: int = 0,
    resume: dict[str, Any] | None = None,
    use_wandb: bool = False,
    wandb: WandbSettings | None = None,
) -> RunResult:
    """Train one inVAE model.

    Args:
        train_cfg: Seed, determinism, schedule, model and optimizer settings.
        data: A data config (prepared here, through the on-disk cache) or prepared data.
        report: Called once per epoch with the metrics row; on checkpoint epochs it is called
            as ``report(metrics, state)`` with a resumable state (see ``training_state``).
        checkpoint_every: Pass a state every this many epochs (0: never).
        resume: A state from an earlier ``report`` call: training continues after its epoch
            and ends bit-for-bit where an uninterrupted run would.
        use_wandb: Log the run to W&B directly (the layout of ``trainables.wandb_run``),
            offline into ``./wandb`` unless ``wandb`` says otherwise. Logging does not change
            the run's bits.
        wandb: Mode, project, group, tags and folder of the W&B run (implies ``use_wandb``).

    Returns:
        The run's result, including its fingerprint (and its W&B run, when it logged).

    Raises:
        NonFiniteLossError: A loss became NaN or infinite.
    """
    if use_wandb or wandb is not None:
        from trainables.wandb_run import WandbSettings, train_logged

        settings = wandb or WandbSettings()
        if settings.mode != "off":
            resumable = {"checkpoint_every": checkpoint_every, "resume": resume}
            return train_logged(train_cfg, data, settings, report, **resumable)
    started = time.perf_counter(), time.time()
    if isinstance(data, PreparedData):
        prepared = data
    else:  # imported here: AnnData, pandas and scikit-learn add ~1.5 s to every worker's start
        from trainables.data import prepare_data

        prepared = prepare_data(data)
    device = resolve_device(train_cfg.device)
    with lane(device) as streams:
        return _train(
            train_cfg, prepared, device, streams, report, checkpoint_every, resume, started
        )


def main(use_wandb: bool = False) -> RunResult:
    """Train once with the default configs: seed 42, deterministic, simulated data.

    The defaults are those of ``configs/train_config.yaml`` and ``configs/data_config.yaml``
    (500 epochs on the pancreas-shape simulated data: for a GPU).

    Args:
        use_wandb: Also log to W&B, offline into ``./wandb``.

    Returns:
        The run's result (write it with ``trainables.run_record.write_run``).
    """
    from trainables import config

    train_cfg, data_cfg = config.load_train_config(), config.load_data_config()
    result = train(train_cfg, data_cfg, use_wandb=use_wandb)
    print(f"seed {train_cfg.seed}: weights sha256 {result.fingerprint.weights}")
    return result


def _train(
    train_cfg: TrainConfig,
    prepared: PreparedData,
    device: torch.device,
    streams: Lane,
    report: Report | None,
    checkpoint_every: int,
    resume: dict[str, Any] | None,
    started: tuple[float, float],  # perf_counter, Unix time
) -> RunResult:
    with PROCESS_LOCK:  # the global RNGs: parameters are drawn from them
        seeding = set_seed(
            train_cfg.seed,
            train_cfg.deterministic,
            train_cfg.cpu_threads,
            train_cfg.cuda_matmul_precision,
        )
        model = InVAE(prepared.n_genes, prepared.n_bio, prepared.n_tech, train_cfg.model)
        model = model.to(device)
        noise = fork_default_generator(device)
    train_set = DeviceSplit.from_split(prepared.train, device)
    val_set = DeviceSplit.from_split(prepared.val, device)
    optimizers = build_optimizers(model, train_cfg)
    generator = torch_generator(train_cfg.seed, device)
    step_fn = make_step(
        model, optimizers, train_set.tensors(), val_set.tensors(), train_cfg, streams, noise
    )
    epoch, step, history = 0, 0, []
    if resume is not None:
        epoch, step, history = restore_state(resume, model, optimizers, generator, noise)

    epoch_seconds, epoch_ends, integration = [], [], {}
    while epoch < train_cfg.n_epochs:
        tick = time.perf_counter()
        metrics, step = train_epoch(step_fn, prepared.train.n_cells, generator, train_cfg, step)
        row = {"epoch": epoch + 1, **metrics}
        epoch_seconds.append(time.perf_counter() - tick)
        epoch_ends.append(time.time())
        check_finite(row)
        history.append(row)
        epoch += 1
        if epoch == train_cfg.n_epochs:  # the final result also carries integration quality
            z_i, _ = latent_means(model, val_set.counts, val_set.bio, val_set.tech)
            integration = embedding_integration(
                z_i, prepared.val.bio_codes, prepared.val.tech_codes
            )
            row = {**row, **integration}
        if report is not None and checkpoint_every and epoch % checkpoint_every == 0:
            state = training_state(epoch, step, model, optimizers, generator, noise, history)
            report(row, state)
        elif report is not None:
            report(row)

    model_state = _to_cpu(model.state_dict())
    optimizer_states = [_to_cpu(o.state_dict()) for o in optimizers]
    return RunResult(
        train_config=train_cfg,
        data=prepared.summary(),
        integration=integration,
        seeding=seeding,
        environment=get_environment_info(),
        model_info={**model_summary(model, optimizers), "device": str(device)},
        history=history,
        fingerprint=fingerprint(model_state, optimizer_states, history),
        model_state=model_state,
        optimizer_states=optimizer_states,
        timing={
            "total_s": time.perf_counter() - started[0],
            "started_unix": started[1],
            "finished_unix": time.time(),
            "epochs_run": len(epoch_seconds),
            "mean_epoch_s": sum(epoch_seconds) / max(len(epoch_seconds), 1),
            "epoch_s": epoch_seconds,  # the first includes CUDA-graph capture and compilation
            "epoch_end_unix": epoch_ends,
            # of the whole process: trainings running beside this one count too
            "max_gpu_memory_bytes": (
                torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
            ),
        },
    )


def minibatches(n_cells: int, batch_size: int, generator: torch.Generator, device) -> Tensor:
    """Shuffle the cells and cut them into full minibatches, ``(n_batches, batch_size)``.

    The incomplete last minibatch is dropped (other cells each epoch, as the order is
    reshuffled), so every step has one shape; with fewer cells than ``batch_size``, all cells
    form one minibatch.
    """
    order = torch.randperm(n_cells, generator=generator, device=device)
    size = min(batch_size, n_cells)
    return order[: n_cells // size * size].view(-1, size)


def train_epoch(
    step_fn: EagerStep, n_cells: int, generator: torch.Generator, cfg: TrainConfig, step: int
) -> tuple[dict[str, float], int]:
    """Run one epoch: a pass over shuffled minibatches, then the validation pass.

    Returns the epoch's metrics (cell-weighted means of the loss terms; ``val_loss`` uses
    β_end) and the step count after it.
    """
    step_fn.model.train()
    step_fn.sums.zero_()
    batches = minibatches(n_cells, cfg.batch_size, generator, step_fn.sums.device)
    step_fn.run_epoch(batches, step)
    step += batches.shape[0]
    sums = host_values(step_fn.sums)
    train_sums, val_sums = sums[:N_TRAIN_SUMS], sums[N_TRAIN_SUMS:]
    n_seen, n_steps = batches.numel(), batches.shape[0]
    means = [v / n_seen for v in train_sums[:5]] + [train_sums[5] / n_steps]
    names = ("train_loss", "recon", "kl_i", "kl_s", "indep", "grad_norm")
    beta = kl_weight(step - 1, cfg.beta_start, cfg.beta_end, cfg.beta_warmup_steps)
    n_val = step_fn.validation[0].shape[0]
    val = LossTerms(*(v / n_val for v in val_sums))
    return {
        **dict(zip(names, means, strict=True)),
        "beta": beta,
        "val_loss": val.total(cfg.beta_end, cfg.indep_weight),
        "val_recon": val.recon,
        "val_kl_i": val.kl_i,
        "val_kl_s": val.kl_s,
        "val_indep": val.indep,
    }, step


def check_finite(row: dict[str, float]) -> None:
    """Raise :class:`NonFiniteLossError` naming every non-finite metric of an epoch."""
    bad = {k: v for k, v in row.items() if not math.isfinite(v)}
    if bad:
        terms = ", ".join(f"{k}={v}" for k, v in bad.items())
        raise NonFiniteLossError(f"epoch {row['epoch']}: non-finite loss ({terms})")


def training_state(
    epoch: int,
    step: int,
    model: InVAE,
    optimizers: list[torch.optim.Optimizer],
    generator: torch.Generator,
    noise: torch.Generator,
    history: list[dict[str, float]],
) -> dict[str, Any]:
    """Everything needed to continue a run bit-for-bit after ``epoch`` epochs."""
    return {
        "epoch": epoch,
        "step": step,
        "model": _to_cpu(model.state_dict()),
        "optimizers": [_to_cpu(o.state_dict()) for o in optimizers],
        "shuffle_generator": generator.get_state(),
        "noise_generator": noise.get_state(),
        "history": [dict(row) for row in history],
    }


def restore_state(
    state: dict[str, Any],
    model: InVAE,
    optimizers: list[torch.optim.Optimizer],
    generator: torch.Generator,
    noise: torch.Generator,
) -> tuple[int, int, list[dict[str, float]]]:
    """Load a ``training_state`` into the run; return its epoch, step and history."""
    if len(state["optimizers"]) != len(optimizers):
        names = ", ".join(type(o).__name__ for o in optimizers)
        raise ValueError(
            f"the checkpoint holds {len(state['optimizers'])} optimizer states, but this run has "
            f"{len(optimizers)} optimizers ({names}): it was written by another version of "
            "invae-sweep (before one Muon per hidden matrix) or for another model; start the "
            "trial afresh"
        )
    model.load_state_dict(state["model"])
    for opt, opt_state in zip(optimizers, state["optimizers"], strict=True):
        opt.load_state_dict(opt_state)
    generator.set_state(state["shuffle_generator"])
    noise.set_state(noise_state(state, noise.device))
    return state["epoch"], state["step"], [dict(row) for row in state["history"]]


def noise_state(state: dict[str, Any], device: torch.device) -> Tensor:
    """The noise generator's state in a checkpoint.

    Checkpoints written before each training had a noise generator of its own hold torch's
    global RNG states instead (``"rng"``), from which the noise was then drawn.
    """
    if "noise_generator" in state:
        return state["noise_generator"]
    rng = state["rng"]
    return rng["cuda"][device.index or 0] if device.type == "cuda" else rng["torch"]


def _to_cpu(value: Any) -> Any:
    if isinstance(value, Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, dict):
        return {k: _to_cpu(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_to_cpu(v) for v in value)
    return value


if __name__ == "__main__":
    main()
