import math

import pytest
import torch

from trainables.constants import METRIC_KEYS
from trainables.fingerprint import fingerprint, metrics_digest, tensor_digest


def state():
    gen = torch.Generator().manual_seed(0)
    return {"b.weight": torch.randn(3, 4, generator=gen), "a.bias": torch.randn(4, generator=gen)}


def history(n=3):
    return [{key: float(i) + 0.1 * j for j, key in enumerate(METRIC_KEYS)} for i in range(n)]


def optimizer_state():
    return {
        "state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.ones(2)}},
        "param_groups": [{"lr": 1e-3, "params": [0]}],
    }


def test_identical_runs_have_identical_fingerprints():
    assert fingerprint(state(), [optimizer_state()], history()) == fingerprint(
        state(), [optimizer_state()], history()
    )


def test_one_changed_weight_changes_only_its_parameter_digest():
    changed = state()
    changed["b.weight"][1, 2] += 1e-7
    before, after = fingerprint(state(), [], history()), fingerprint(changed, [], history())
    assert before.weights != after.weights
    assert before.metrics == after.metrics
    differing = [k for k in before.parameters if before.parameters[k] != after.parameters[k]]
    assert differing == ["b.weight"]


def test_key_order_of_the_state_dict_does_not_matter():
    s = state()
    assert (
        fingerprint(dict(reversed(list(s.items()))), [], []).weights
        == fingerprint(s, [], []).weights
    )


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (torch.zeros(2), -torch.zeros(2)),  # same value, other bits
        (torch.zeros(2), torch.zeros(2, dtype=torch.float64)),  # other dtype
        (torch.zeros(2, 3), torch.zeros(3, 2)),  # other shape
    ],
)
def test_tensor_digest_sees_bits_dtype_and_shape(a, b):
    assert tensor_digest(a) != tensor_digest(b)


def test_one_ulp_in_one_metric_changes_the_metrics_digest():
    changed = history()
    changed[1]["val_loss"] = math.nextafter(changed[1]["val_loss"], math.inf)
    assert metrics_digest(changed) != metrics_digest(history())


def test_optimizer_states_are_hashed():
    other = optimizer_state()
    other["state"][0]["exp_avg"][0] = 2.0
    assert (
        fingerprint(state(), [other], []).optimizer
        != fingerprint(state(), [optimizer_state()], []).optimizer
    )


def test_digests_are_those_every_earlier_run_recorded():
    """The algorithm is pinned: a run recorded by any earlier version still verifies."""
    weights = {
        "w": torch.arange(6, dtype=torch.float32).reshape(2, 3) / 7,
        "b": torch.tensor([-0.0, 1.5]),
    }
    optimizers = [
        {
            "state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.ones(2)}},
            "param_groups": [{"lr": 1e-3, "betas": (0.9, 0.999), "params": [0], "nesterov": True}],
        }
    ]
    rows = [{k: i + 0.25 * j for j, k in enumerate(METRIC_KEYS)} for i in range(2)]
    found = fingerprint(weights, optimizers, rows)
    assert found.weights == "2fc40e47cbf46cb59d70528f7ba3f99197a6cdee5812bbd57f774649f5f32167"
    assert found.optimizer == "ea7090776258f7827d03c5a7d5c2a216dc46be5e820376229e4e4432034e17d0"
    assert found.metrics == "ea4a6fc7b13d14f5b6b46f6d04ae66989aade91b2e5e1b798e220f3865dcf190"


def test_finer_digests_locate_a_tensor_an_optimizer_and_an_epoch():
    base = fingerprint(state(), [optimizer_state(), optimizer_state()], history())
    assert base.parameters == {name: tensor_digest(t) for name, t in state().items()}
    other = optimizer_state()
    other["param_groups"][0]["lr"] = 2e-3
    changed = history()
    changed[2]["kl_i"] = math.nextafter(changed[2]["kl_i"], 0.0)
    moved = fingerprint(state(), [optimizer_state(), other], changed)
    assert [a == b for a, b in zip(base.optimizers, moved.optimizers, strict=True)] == [True, False]
    assert [a == b for a, b in zip(base.epochs, moved.epochs, strict=True)] == [True, True, False]
    assert base.epochs[0] == metrics_digest(history()[:1])
