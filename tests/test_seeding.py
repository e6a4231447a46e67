import functools
import json
import os
import random
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

from trainables import seeding

RECORD_KEYS = {
    "seed",
    "deterministic",
    "cpu_threads",
    "torch_deterministic_algorithms",
    "torch_deterministic_warn_only",
    "fill_uninitialized_memory",
    "inductor_deterministic",
    "cudnn_deterministic",
    "cudnn_benchmark",
    "matmul_allow_tf32",
    "cudnn_allow_tf32",
    "float32_matmul_precision",
    "fp32_precision",
    "cublas_workspace_config",
    "mkl_cbwr",
    "python_hash_seed",
}


def _flag_owner(path):
    return (
        torch.backends
        if path == "generic"
        else functools.reduce(getattr, path.split("."), torch.backends)
    )


def _legacy_tf32():
    try:
        return torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    except RuntimeError:  # legacy and new TF32 APIs were mixed: nothing to restore
        return None


@pytest.fixture(autouse=True)
def restore_global_state():
    """Undo set_seed's changes to torch, the RNGs and the environment after each test."""
    # monkeypatch.delenv records nothing for an unset variable, so it could not undo set_seed.
    cublas = os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
    saved = {
        "deterministic": torch.are_deterministic_algorithms_enabled(),
        "warn_only": torch.is_deterministic_algorithms_warn_only_enabled(),
        "threads": torch.get_num_threads(),
        "fill": torch.utils.deterministic.fill_uninitialized_memory,
        "cudnn_deterministic": torch.backends.cudnn.deterministic,
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "legacy_tf32": _legacy_tf32(),
        "matmul_precision": torch.get_float32_matmul_precision(),
        "fp32_precision": seeding.fp32_precision_flags(),
        "rng": (random.getstate(), np.random.get_state(), torch.get_rng_state()),
    }
    yield
    torch.use_deterministic_algorithms(saved["deterministic"], warn_only=saved["warn_only"])
    torch.set_num_threads(saved["threads"])
    torch.utils.deterministic.fill_uninitialized_memory = saved["fill"]
    torch.backends.cudnn.deterministic = saved["cudnn_deterministic"]
    torch.backends.cudnn.benchmark = saved["cudnn_benchmark"]
    # The legacy TF32 switches are state of their own: restore them before the new-API flags.
    if saved["legacy_tf32"] is not None:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved[
            "legacy_tf32"
        ]
    torch.set_float32_matmul_precision(saved["matmul_precision"])
    for path, value in saved["fp32_precision"].items():
        _flag_owner(path).fp32_precision = value
    python_state, numpy_state, torch_state = saved["rng"]
    random.setstate(python_state)
    np.random.set_state(numpy_state)
    torch.set_rng_state(torch_state)
    os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
    if cublas is not None:
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = cublas


def _draws():
    return (
        [random.random(), random.gauss(0, 1)],
        np.concatenate([np.random.rand(3), np.random.standard_normal(3)]).tolist(),
        torch.cat([torch.rand(3), torch.randn(3)]).tolist(),
    )


# --- seeding -------------------------------------------------------------------------------


@pytest.mark.parametrize("deterministic", [True, False])
def test_same_seed_gives_same_draws(deterministic):
    seeding.set_seed(7, deterministic)
    first = _draws()
    seeding.set_seed(7, deterministic)
    assert _draws() == first


def test_different_seeds_give_different_draws():
    seeding.set_seed(1, True)
    first = _draws()
    seeding.set_seed(2, True)
    assert all(a != b for a, b in zip(_draws(), first, strict=True))


@pytest.mark.parametrize(
    "seed", [-1, 2**32, 1.5, "3", True, None], ids=["neg", "2**32", "float", "str", "bool", "none"]
)
def test_invalid_seed_raises_naming_the_value(seed):
    with pytest.raises(ValueError, match=re.escape(repr(seed))):
        seeding.set_seed(seed, True)


@pytest.mark.parametrize("seed", [0, 2**32 - 1, np.int64(5)])
def test_seed_bounds_are_accepted(seed):
    record = seeding.set_seed(seed, True)
    assert record["seed"] == seed and type(record["seed"]) is int


@pytest.mark.parametrize("threads", [0, -1, 1.5, True])
def test_invalid_cpu_threads_raises(threads):
    with pytest.raises(ValueError, match="cpu_threads"):
        seeding.set_seed(0, True, cpu_threads=threads)


def test_invalid_cuda_matmul_precision_raises():
    with pytest.raises(ValueError, match=r"cuda_matmul_precision.*'bf16'"):
        seeding.set_seed(0, True, cuda_matmul_precision="bf16")


# --- the switches and the record -----------------------------------------------------------


def test_record_has_exactly_the_documented_keys():
    assert set(seeding.set_seed(0, True)) == RECORD_KEYS


@pytest.mark.parametrize(
    ("deterministic", "expected"),
    [
        (
            True,
            {
                "torch_deterministic_algorithms": True,
                "torch_deterministic_warn_only": False,
                "inductor_deterministic": True,
                "cudnn_deterministic": True,
                "cudnn_benchmark": False,
                "matmul_allow_tf32": False,
                "cudnn_allow_tf32": False,
                "float32_matmul_precision": "highest",
                "cublas_workspace_config": ":4096:8",
            },
        ),
        (
            False,
            {
                "torch_deterministic_algorithms": False,
                "torch_deterministic_warn_only": False,
                "inductor_deterministic": False,
                "cudnn_deterministic": False,
                "cudnn_benchmark": True,
                "cublas_workspace_config": None,
            },
        ),
    ],
)
def test_record_contents(deterministic, expected):
    record = seeding.set_seed(3, deterministic)
    assert {key: record[key] for key in expected} == expected
    assert record["seed"] == 3 and record["deterministic"] is deterministic


def test_non_deterministic_mode_leaves_tf32_as_it_was():
    before = torch.backends.cudnn.allow_tf32
    assert seeding.set_seed(3, False)["cudnn_allow_tf32"] == before


@pytest.mark.parametrize("deterministic", [True, False])
def test_torch_is_in_the_recorded_state(deterministic):
    record = seeding.set_seed(3, deterministic, cpu_threads=1)
    assert torch.are_deterministic_algorithms_enabled() is record["torch_deterministic_algorithms"]
    assert torch.get_num_threads() == record["cpu_threads"] == 1
    assert torch.backends.cudnn.deterministic is record["cudnn_deterministic"]
    assert torch.backends.cudnn.benchmark is record["cudnn_benchmark"]
    assert torch.backends.cuda.matmul.allow_tf32 is record["matmul_allow_tf32"]
    assert torch.backends.cudnn.allow_tf32 is record["cudnn_allow_tf32"]
    assert torch.get_float32_matmul_precision() == record["float32_matmul_precision"]
    assert seeding.fp32_precision_flags() == record["fp32_precision"]


@pytest.mark.parametrize("threads", [1, 2])
def test_cpu_threads_are_set_and_recorded(threads):
    assert seeding.set_seed(0, True, cpu_threads=threads)["cpu_threads"] == threads
    assert torch.get_num_threads() == threads


@pytest.mark.parametrize("deterministic", [True, False])
def test_cuda_matmul_precision_is_applied_and_recorded_and_nothing_else_is_tf32(deterministic):
    record = seeding.set_seed(0, deterministic, cuda_matmul_precision="tf32")
    assert torch.backends.cuda.matmul.allow_tf32 is record["matmul_allow_tf32"] is True
    assert record["fp32_precision"]["cuda.matmul"] == "tf32"
    if deterministic:
        others = {k: v for k, v in record["fp32_precision"].items() if k != "cuda.matmul"}
        assert set(others.values()) <= {"ieee"}
        assert record["cudnn_allow_tf32"] is False
    record = seeding.set_seed(0, deterministic)  # the default is IEEE float32 again
    assert torch.backends.cuda.matmul.allow_tf32 is record["matmul_allow_tf32"] is False


def test_deterministic_overrides_tf32_set_through_the_new_api():
    # The legacy allow_tf32 switches alone leave these flags at "tf32" (torch 2.13).
    torch.backends.fp32_precision = "tf32"
    torch.backends.cudnn.fp32_precision = "tf32"
    record = seeding.set_seed(0, True)
    assert set(record["fp32_precision"].values()) == {"ieee"}
    assert record["cudnn_allow_tf32"] is False and record["matmul_allow_tf32"] is False


def test_cuda_matmul_precision_is_the_arguments_not_the_process_history():
    torch.set_float32_matmul_precision("high")  # TF32 for CUDA matmuls, set elsewhere
    record = seeding.set_seed(0, False)
    assert record["matmul_allow_tf32"] is False
    assert record["fp32_precision"]["cuda.matmul"] == "ieee"


@pytest.mark.parametrize("value", [None, "0"])
def test_python_hash_seed_is_recorded(monkeypatch, value):
    if value is None:
        monkeypatch.delenv("PYTHONHASHSEED", raising=False)
    else:
        monkeypatch.setenv("PYTHONHASHSEED", value)
    assert seeding.set_seed(0, True)["python_hash_seed"] == value


def test_record_is_json_serialisable():
    record = seeding.set_seed(0, True)
    assert json.loads(json.dumps(record)) == record


# --- CUBLAS_WORKSPACE_CONFIG ---------------------------------------------------------------


def test_determinism_env_is_what_set_seed_sets():
    expected = {"CUBLAS_WORKSPACE_CONFIG": ":4096:8", "MKL_CBWR": "AUTO,STRICT"}
    assert seeding.determinism_env() == expected
    seeding.set_seed(0, True)
    assert seeding.determinism_env().items() <= dict(os.environ).items()
    assert seeding.set_seed(0, True)["mkl_cbwr"] == "AUTO,STRICT"


@pytest.mark.parametrize("given", [None, "COMPATIBLE"])
def test_importing_trainables_puts_mkl_in_strict_reproducible_mode_unless_set(given):
    """Before the process's first CPU matrix product, when MKL reads it; a set value stays."""
    env = {k: v for k, v in os.environ.items() if k != "MKL_CBWR"}
    if given is not None:
        env["MKL_CBWR"] = given
    code = "import os, trainables; print(os.environ['MKL_CBWR'])"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.strip() == (given or "AUTO,STRICT"), out.stderr


def test_cublas_config_is_left_alone_when_set(monkeypatch):
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":16:8")
    assert seeding.set_seed(0, True)["cublas_workspace_config"] == ":16:8"


def test_cublas_config_is_not_set_when_nondeterministic():
    seeding.set_seed(0, False)
    assert "CUBLAS_WORKSPACE_CONFIG" not in os.environ


def test_cublas_config_set_after_cuda_init_warns(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    with pytest.warns(RuntimeWarning, match="CUBLAS_WORKSPACE_CONFIG"):
        seeding.set_seed(0, True)


# --- generators and RNG state --------------------------------------------------------------


def test_torch_generator_is_reproducible_and_independent_of_global_rng():
    first = torch.randperm(20, generator=seeding.torch_generator(5, "cpu"))
    torch.rand(10)  # advancing the global RNG must not matter
    assert torch.equal(torch.randperm(20, generator=seeding.torch_generator(5, "cpu")), first)
    assert not torch.equal(torch.randperm(20, generator=seeding.torch_generator(6)), first)


def test_torch_generator_rejects_invalid_seed():
    with pytest.raises(ValueError, match="-1"):
        seeding.torch_generator(-1, "cpu")
