"""What one inVAE trial runs, usable without Ray: config, seeding, data, model, training loop."""

from trainables.provenance import get_environment_info
from trainables.seeding import set_seed

__all__ = ["get_environment_info", "set_seed"]
