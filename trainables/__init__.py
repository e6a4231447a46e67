"""What one inVAE trial runs, usable without Ray: config, seeding, data, model, training loop.

``load_train_config``, ``load_data_config``, ``set_seed`` and ``get_environment_info`` are
imported on first use, so that reading results (``trainables.files``,
``trainables.run_record``) does not load torch. Training: ``trainables.train.train`` and
``trainables.train.main``.
"""

import os
from importlib import import_module
from typing import Any

from trainables.constants import MKL_CBWR

# Before torch's first CPU matrix product in the process, which is when MKL reads it.
os.environ.setdefault("MKL_CBWR", MKL_CBWR)

_LAZY = {
    "load_train_config": "trainables.config",
    "load_data_config": "trainables.config",
    "set_seed": "trainables.seeding",
    "get_environment_info": "trainables.provenance",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'trainables' has no attribute {name!r}")
