"""Module boundaries: what importing a module may load (checked in a fresh interpreter)."""

import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    ("module", "forbidden"),
    [
        ("trainables.model", ("anndata", "scanpy", "ray", "wandb")),
        ("trainables.optim", ("anndata", "scanpy", "ray", "wandb")),
        ("trainables.simulate", ("anndata", "scanpy")),
        ("trainables.datasets", ("anndata", "scanpy", "torch")),
        ("trainables.integration", ("anndata", "scanpy", "torch")),
        ("trainables.train", ("ray", "wandb", "scanpy")),
        # What every trial worker and training process imports as it starts.
        ("trainables.ray_trainable", ("anndata", "scanpy", "sklearn")),
        ("sweeper.verify.analysis", ("torch", "ray", "anndata", "wandb")),
        ("sweeper.verify.verdict", ("torch", "ray", "anndata", "wandb")),
        ("trainables.run_record", ("torch", "ray", "anndata", "wandb")),
    ],
)
def test_module_imports_stay_light(module, forbidden):
    code = (
        f"import sys, {module}; "
        f"bad = [m for m in {forbidden!r} if m in sys.modules]; print(bad); sys.exit(bool(bad))"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr


def test_public_helpers_import_from_the_package():
    from trainables import get_environment_info, set_seed

    assert callable(set_seed) and callable(get_environment_info)
