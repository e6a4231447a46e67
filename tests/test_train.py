import dataclasses
import math

import pytest
import torch

from trainables.constants import METRIC_KEYS
from trainables.integration import INTEGRATION_KEYS
from trainables.model import InVAE
from trainables.train import NonFiniteLossError, check_finite, train


def test_report_is_called_once_per_epoch_with_every_metric(tiny_train_config, tiny_data):
    rows = []
    result = train(tiny_train_config, tiny_data, report=rows.append)
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert all(set(r) == set(METRIC_KEYS) for r in result.history)
    assert rows[:-1] == result.history[:-1]
    # the last report also carries the integration scores of z_i on the validation cells
    assert rows[-1] == {**result.history[-1], **result.integration}
    assert set(result.integration) == set(INTEGRATION_KEYS)
    assert all(math.isfinite(v) for r in rows for v in r.values())


def test_same_seed_same_fingerprint_other_seed_differs(tiny_train_config, tiny_data):
    first = train(tiny_train_config, tiny_data)
    again = train(tiny_train_config, tiny_data)
    other = train(dataclasses.replace(tiny_train_config, seed=7), tiny_data)
    assert first.fingerprint == again.fingerprint
    assert first.fingerprint.weights != other.fingerprint.weights
    assert first.fingerprint.metrics != other.fingerprint.metrics


def test_loss_decreases(tiny_train_config, tiny_data):
    cfg = dataclasses.replace(tiny_train_config, n_epochs=15, learning_rate=3e-3)
    history = train(cfg, tiny_data).history
    assert history[-1]["val_recon"] < history[0]["val_recon"]


def test_validation_metrics_are_the_validation_cells_loss_after_the_epoch(
    tiny_train_config, tiny_data
):
    result = train(tiny_train_config, tiny_data)
    model = InVAE(tiny_data.n_genes, tiny_data.n_bio, tiny_data.n_tech, tiny_train_config.model)
    model.load_state_dict(result.model_state)
    model.eval()
    val = tiny_data.val
    with torch.no_grad():
        terms = model(*(torch.as_tensor(a) for a in (val.counts, val.bio, val.tech)))
    last = result.history[-1]
    expected = {
        "val_loss": terms.total(tiny_train_config.beta_end, tiny_train_config.indep_weight),
        "val_recon": terms.recon,
        "val_kl_i": terms.kl_i,
        "val_kl_s": terms.kl_s,
        "val_indep": terms.indep,
    }
    assert {k: last[k] for k in expected} == pytest.approx(
        {k: v.item() for k, v in expected.items()}, rel=1e-6
    )


def test_resume_from_a_checkpoint_ends_bit_for_bit_like_an_uninterrupted_run(
    tiny_train_config, tiny_data
):
    cfg = dataclasses.replace(tiny_train_config, n_epochs=4)
    uninterrupted = train(cfg, tiny_data)
    states = []
    train(cfg, tiny_data, report=lambda row, state=None: states.append(state), checkpoint_every=2)
    assert [s is not None for s in states] == [False, True, False, True]
    resumed = train(cfg, tiny_data, resume=states[1])
    assert resumed.fingerprint == uninterrupted.fingerprint
    assert resumed.timing["epochs_run"] == 2


def test_a_checkpoint_of_another_version_is_refused_in_one_sentence(tiny_train_config, tiny_data):
    states = []
    report = lambda row, state=None: states.append(state)  # noqa: E731
    train(tiny_train_config, tiny_data, report=report, checkpoint_every=1)
    older = {k: v for k, v in states[0].items() if k != "format"}
    older["optimizers"] = [{}, {}]  # what checkpoints held before trials trained in groups
    with pytest.raises(ValueError, match=r"another version of invae-sweep .* the trial afresh"):
        train(tiny_train_config, tiny_data, resume=older)


def test_non_finite_metrics_are_named():
    row = {"epoch": 3, "train_loss": float("nan"), "val_loss": 1.0, "kl_i": float("inf")}
    with pytest.raises(NonFiniteLossError, match=r"epoch 3: .*train_loss=nan.*kl_i=inf"):
        check_finite(row)


def test_diverging_training_raises_instead_of_continuing(tiny_train_config, tiny_data):
    cfg = dataclasses.replace(tiny_train_config, learning_rate=1e12, grad_clip=None)
    with pytest.raises(NonFiniteLossError):
        train(cfg, tiny_data)
