"""A multi-node Ray cluster on this machine (ray.cluster_utils): sweeps and audits through
``--address``, a worker node lost mid-sweep, and storage every node must see."""

import json
from pathlib import Path

import pytest
from ray import tune

from sweeper.audit import audit_sweep, run_audit
from sweeper.driver import run_sweep
from sweeper.options import DriverOptions, apply_options
from sweeper.spec import SweepError, load_sweep
from sweeper.storage import SweepFolder, nodes_missing
from trainables.constants import WANDB_CONFIG

pytestmark = pytest.mark.ray

SMOKE = Path(__file__).parents[1] / "configs" / "smoke.yaml"


@pytest.fixture(scope="module")
def cluster(ray_env):
    """A head node and two workers with 1 CPU each (the workers with 2 fake GPUs each)."""
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(
        initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False}
    )
    workers = [cluster.add_node(num_cpus=1, num_gpus=2) for _ in range(2)]
    cluster.wait_for_nodes()
    yield cluster, workers
    if ray.is_initialized():
        ray.shutdown()
    cluster.shutdown()


def smoke(tmp_path, name, **overrides):
    sweep = load_sweep(SMOKE, {"outputs.best_n": 0, **overrides})
    return apply_options(sweep, DriverOptions(name=name, storage=str(tmp_path)))


def records(folder, summary):
    return [json.loads((folder / t.run_json).read_text()) for t in summary.trials]


def test_sweep_through_address_runs_on_several_nodes(cluster, tmp_path):
    head, _ = cluster
    summary = run_sweep(
        smoke(tmp_path, "multi"), DriverOptions(gpus=0, address=head.address)
    ).summary
    assert summary.n_completed == 4
    runs = records(tmp_path / "multi", summary)
    assert len({r["trial"]["node"]["node_id"] for r in runs}) > 1
    by_seed = {}
    for r in runs:
        by_seed.setdefault(r["config"]["train"]["seed"], set()).add(r["fingerprint"]["weights"])
    assert all(len(w) == 1 for w in by_seed.values())


def test_audit_places_replicates_on_different_nodes_and_they_agree(cluster, tmp_path):
    head, _ = cluster
    sweep = apply_options(
        audit_sweep(load_sweep(SMOKE, {"outputs.best_n": 0}), seed=3, repeats=3),
        DriverOptions(name="audit", storage=str(tmp_path)),
    )
    verification = run_audit(sweep, DriverOptions(gpus=0, address=head.address)).verification
    (group,) = verification.groups
    assert group.status == "identical" and verification.exit_code == 0
    nodes = [m.environment["node_id"] for m in group.members]
    assert len(set(nodes)) == 3  # three replicates, three nodes
    assert (tmp_path / "audit" / "verification.html").exists()


class LoseWorkerNode(tune.Callback):
    """Remove the worker node a trial runs on when that trial reaches epoch 3."""

    def __init__(self, cluster, workers):
        self.cluster, self.workers, self.nodes, self.removed = cluster, workers, {}, None

    def __getstate__(self):  # Tune saves its callbacks; the cluster handle stays behind
        return {"nodes": self.nodes, "removed": self.removed}

    def on_trial_result(self, iteration, trials, trial, result):
        first = result.get(WANDB_CONFIG) or {}  # a trial's first result says where it runs
        if "node/node_id" in first:
            self.nodes[trial.trial_id] = first["node/node_id"]
        by_id = {w.node_id: w for w in self.workers}
        node = self.nodes.get(trial.trial_id)
        if self.removed is None and result["training_iteration"] == 3 and node in by_id:
            self.removed = node
            self.cluster.remove_node(by_id[node])


def test_lost_worker_node_trials_resume_elsewhere_with_same_fingerprints(cluster, tmp_path):
    head, workers = cluster
    sweep = smoke(tmp_path, "lose", seeds=[5], replicates=3, **{"train.n_epochs": 6})
    loser = LoseWorkerNode(head, workers)
    summary = run_sweep(sweep, DriverOptions(gpus=0, address=head.address), [loser]).summary
    assert loser.removed is not None
    assert summary.n_completed == 3
    assert any(t.restored for t in summary.trials)
    assert len({t.fingerprint.weights for t in summary.trials}) == 1
    for run in records(tmp_path / "lose", summary):
        assert run["trial"]["node"]["node_id"] != loser.removed  # finished elsewhere


def test_a_path_some_node_cannot_see_is_refused(cluster, tmp_path, monkeypatch):
    import ray

    head, _ = cluster
    ray.init(address=head.address)
    try:
        assert len(nodes_missing(str(tmp_path / "nowhere"))) == len(
            [n for n in ray.nodes() if n["Alive"]]
        )
        assert nodes_missing(str(tmp_path)) == []
        monkeypatch.setattr("sweeper.storage.nodes_missing", lambda path: ["10.0.0.9 (deadbeef)"])
        with pytest.raises(SweepError, match=r"not visible from 1 node\(s\) \(10\.0\.0\.9"):
            SweepFolder(tmp_path / "sweep").check_visible_from_all_nodes()
    finally:
        ray.shutdown()
