from pathlib import Path

import pytest
import yaml

from sweeper.cluster import gpus_per_trial
from sweeper.search import expand_trials, param_space, searched_values
from sweeper.spec import SweepError, load_sweep
from trainables.schema import ConfigError

CONFIGS = Path(__file__).parents[1] / "configs"


def write_sweep(tmp_path, **entries):
    base = {"train_config": str(CONFIGS / "train_config.yaml"), "seeds": [1]}
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(base | entries))
    return path


@pytest.mark.parametrize("name", ["sweep.yaml", "audit.yaml", "smoke.yaml"])
def test_shipped_sweep_files_are_valid(name):
    sweep = load_sweep(CONFIGS / name)
    assert len(expand_trials(sweep)) == sweep.spec.n_trials


def test_default_sweep_runs_on_the_simulated_data():
    sweep = load_sweep(CONFIGS / "sweep.yaml")
    assert sweep.data.data_path == "simulated"
    assert sweep.spec.n_trials == 24


@pytest.mark.parametrize(
    ("entries", "key", "fragment"),
    [
        ({"replicate": 2}, "replicate", "did you mean 'replicates'"),
        ({"replicates": 0}, "replicates", ">= 1"),
        ({"num_samples": 0}, "num_samples", ">= 1"),
        ({"metric": "val_los"}, "metric", "val_loss"),
        ({"mode": "maximize"}, "mode", "min, max"),
        ({"seeds": [1, 1]}, "seeds", "distinct"),
        ({"seeds": {"count": 0}}, "seeds", "count >= 1"),
        ({"seeds": {"cnt": 2}}, "seeds.cnt", "did you mean 'count'"),
        (
            {"resources": {"gpus_per_trial": 0.5, "trials_per_gpu": 2}},
            "resources.gpus_per_trial",
            "not both",
        ),
        ({"resources": {"cpus_per_trl": 1}}, "resources.cpus_per_trl", "cpus_per_trial"),
        (
            {"resources": {"one_process_per_gpu": True, "gpus_per_trial": 0.5}},
            "resources.one_process_per_gpu",
            "give trials_per_gpu",
        ),
        (
            {
                "resources": {"one_process_per_gpu": True},
                "search": {"deterministic": {"grid": [True, False]}},
            },
            "search.deterministic",
            "one process per trial",
        ),
        (
            {
                "resources": {"one_process_per_gpu": True},
                "search": {"cuda_matmul_precision": {"grid": ["ieee", "tf32"]}},
            },
            "search.cuda_matmul_precision",
            "one process per trial",
        ),
        ({"wandb": {"mode": "cloud"}}, "wandb.mode", "offline, online, disabled"),
        ({"train": {"model": {"z_i_dim": 0}}}, "train.model.z_i_dim", ">= 1"),
        ({"data": {"val_size": 3}}, "data.val_size", "(0, 1)"),
        ({"search": {"learning_rte": {"choice": [0.1]}}}, "search.learning_rte", "learning_rate"),
        ({"search": {"seed": {"grid": [1, 2]}}}, "search.seed", "seeds"),
        ({"search": {"learning_rate": {"normal": [0, 1]}}}, "search.learning_rate", "grid, choice"),
        (
            {"search": {"learning_rate": {"uniform": [0.1, 0.01]}}},
            "search.learning_rate.uniform",
            "low < high",
        ),
        (
            {"search": {"learning_rate": {"loguniform": [0, 0.1]}}},
            "search.learning_rate.loguniform",
            "0 < low",
        ),
        ({"search": {"model.z_i_dim": {"grid": []}}}, "search.model.z_i_dim.grid", "non-empty"),
        ({"search": {"model.z_i_dim": {"grid": [10, 0]}}}, "search.model.z_i_dim", "value 0"),
        ({"search": {"model.z_i_dim": {"uniform": [2, 8]}}}, "search.model.z_i_dim", "floats"),
        ({"search": {"dropout": {"randint": [1, 3]}}}, "search.dropout", "did you mean"),
        (
            {"search": {"data.n_top_genes": {"choice": [100, -5]}}},
            "search.data.n_top_genes",
            "value -5",
        ),
    ],
)
def test_invalid_sweeps_name_the_key(tmp_path, entries, key, fragment):
    with pytest.raises(ConfigError) as info:
        load_sweep(write_sweep(tmp_path, **entries))
    assert info.value.key == key
    assert fragment in str(info.value)
    assert "sweep.yaml" in str(info.value)


def test_seed_count_and_base(tmp_path):
    sweep = load_sweep(write_sweep(tmp_path, seeds={"count": 3, "base": 10}))
    assert sweep.spec.seeds == (10, 11, 12)


def test_search_keys_reach_train_model_and_data(tmp_path):
    search = {
        "learning_rate": {"loguniform": [1e-4, 1e-2]},
        "model.hidden": {"choice": [[64], [64, 32]]},
        "data.n_top_genes": {"grid": [100, 200]},
    }
    sweep = load_sweep(write_sweep(tmp_path, search=search, num_samples=2))
    trials = expand_trials(sweep)
    assert len(trials) == 2 * 2  # num_samples x grid
    values = searched_values(sweep, trials[0])
    assert 1e-4 <= values["learning_rate"] < 1e-2
    assert values["model.hidden"] in ([64], [64, 32])
    assert values["data.n_top_genes"] == 100
    assert sweep.spec.searched_data_keys() == ["data.n_top_genes"]


def test_param_space_holds_only_what_varies(tmp_path):
    search = {"model.z_i_dim": {"grid": [4, 8]}, "data.n_top_genes": {"choice": [100, 200]}}
    sweep = load_sweep(write_sweep(tmp_path, train={"n_epochs": 7}, search=search, replicates=2))
    space = param_space(sweep)
    assert set(space) == {"train", "data", "replicate"}
    assert set(space["train"]) == {"seed", "model"} and set(space["train"]["model"]) == {"z_i_dim"}
    assert set(space["data"]) == {"n_top_genes"}
    assert sweep.train.n_epochs == 7  # the base config carries the rest


def test_relative_data_paths_become_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sweep = load_sweep(write_sweep(tmp_path, data={"data_path": "x/counts.h5ad"}))
    assert sweep.data.data_path == str(tmp_path / "x" / "counts.h5ad")


RANDOM_SEARCH = {
    "learning_rate": {"loguniform": [1e-4, 1e-2]},
    "model.dropout": {"uniform": [0.0, 0.5]},
    "model.z_i_dim": {"randint": [4, 40]},
    "model.z_s_dim": {"grid": [2, 3]},
}


def test_replicates_are_true_replicates(tmp_path):
    """Every replicate of a (hyperparameters, seed) point has the same config but its index."""
    sweep = load_sweep(
        write_sweep(tmp_path, search=RANDOM_SEARCH, seeds=[1, 2], replicates=3, num_samples=4)
    )
    trials = expand_trials(sweep)
    assert len(trials) == 4 * 2 * 2 * 3
    points = {}
    for i, config in enumerate(trials):  # each of the 4 samples is 12 consecutive trials
        key = (i // 12, config["train"]["seed"], config["train"]["model"]["z_s_dim"])
        rest = {k: v for k, v in config.items() if k != "replicate"}
        points.setdefault(key, []).append((config["replicate"], rest))
    for members in points.values():
        assert sorted(r for r, _ in members) == [0, 1, 2]
        assert all(rest == members[0][1] for _, rest in members)
    # and the samples really differ between num_samples draws
    rates = {searched_values(sweep, t)["learning_rate"] for t in trials}
    assert len(rates) == 4


def test_without_constant_grid_search_replicates_would_differ(tmp_path):
    """The trap the sweeper avoids: Tune's default resamples inside each grid cell."""
    import numpy as np
    from ray.tune.search.variant_generator import generate_variants

    sweep = load_sweep(write_sweep(tmp_path, search=RANDOM_SEARCH, replicates=2))
    space = {"config": param_space(sweep)}
    rng = np.random.default_rng(0)
    configs = [c["config"] for _, c in generate_variants(space, random_state=rng)]
    rates = [c["train"]["learning_rate"] for c in configs]
    assert len(set(rates)) == len(rates)


def test_searcher_seed_makes_the_sweep_repeatable(tmp_path):
    path = write_sweep(tmp_path, search=RANDOM_SEARCH, num_samples=3)
    first = expand_trials(load_sweep(path))
    assert expand_trials(load_sweep(path)) == first
    other = write_sweep(tmp_path, search=RANDOM_SEARCH, num_samples=3, searcher_seed=1)
    assert expand_trials(load_sweep(other)) != first


@pytest.mark.parametrize(
    ("trials", "gpus", "resources", "max_concurrent", "expected"),
    [
        (16, 4, {"trials_per_gpu": 4}, None, 0.25),  # enough trials: 4 per GPU
        (6, 4, {"trials_per_gpu": 4}, None, 0.5),  # too few: 2 per GPU, not 4+2 on GPUs 0-1
        (4, 4, {"trials_per_gpu": 4}, None, 1.0),  # one per GPU
        (16, 4, {"trials_per_gpu": 4}, 8, 0.5),  # concurrency caps the packing
        (16, 1, {"trials_per_gpu": 4}, None, 0.25),
        (16, 4, {"gpus_per_trial": 0.5}, None, 0.5),  # explicit share wins
        (16, 0, {"trials_per_gpu": 4}, None, 0.0),  # CPU trials
        (3, 2, {}, None, 0.5),  # default packing, limited by the trial count
    ],
)
def test_gpu_share_spreads_trials_over_all_gpus(
    tmp_path, trials, gpus, resources, max_concurrent, expected
):
    sweep = load_sweep(
        write_sweep(
            tmp_path,
            seeds=list(range(trials)),
            resources=resources,
            max_concurrent_trials=max_concurrent,
        )
    )
    assert gpus_per_trial(sweep, gpus) == pytest.approx(expected)


def test_sweeps_on_gpus_train_in_groups_unless_told_or_they_cannot(tmp_path, monkeypatch):
    from sweeper import cluster

    unset = load_sweep(write_sweep(tmp_path, seeds=list(range(20))))
    grouped = cluster.plan_placement(unset, n_gpus=1)
    assert (grouped.in_groups, grouped.group_width, grouped.host_slots) == (True, 16, 16)
    assert grouped.resources["gpu"] == 0  # a trial's worker relays; its GPU's host trains
    on_cpus = cluster.plan_placement(unset, n_gpus=0)
    assert not on_cpus.in_groups and on_cpus.group_width is None  # a process each, width 1
    searched = load_sweep(write_sweep(tmp_path, search={"deterministic": {"grid": [True, False]}}))
    assert not cluster.plan_placement(searched, n_gpus=1).in_groups
    for chosen in (True, False):
        told = load_sweep(write_sweep(tmp_path, resources={"one_process_per_gpu": chosen}))
        assert cluster.plan_placement(told, n_gpus=0).in_groups is chosen
    narrow = {"train": {"group_width": 4}, "resources": {"trials_per_gpu": 6}}
    wide = load_sweep(write_sweep(tmp_path, **narrow))
    assert cluster.plan_placement(wide, n_gpus=2).group_width == 4
    assert cluster.plan_placement(wide, n_gpus=2).max_concurrent(None) == 12  # 6 per GPU

    def two_nodes(resources):  # an audit across nodes pins replicates
        return lambda config: None

    monkeypatch.setattr(cluster, "replicates_over_nodes", two_nodes)
    assert not cluster.plan_placement(unset, n_gpus=2, spread=True).in_groups
    told = load_sweep(write_sweep(tmp_path, resources={"one_process_per_gpu": True}))
    with pytest.raises(SweepError, match="replicates cannot be pinned"):
        cluster.plan_placement(told, n_gpus=2, spread=True)


@pytest.mark.parametrize(
    ("seeds", "resources", "gpus", "width"),
    [
        (1, {}, 1, 1),  # a lone trial trains at width 1, not in a group of 16
        (4, {}, 1, 4),
        (16, {}, 4, 4),  # 4 trials at once on each GPU
        (64, {"trials_per_gpu": 64}, 1, 16),  # four groups of 16
        (48, {"trials_per_gpu": 24}, 1, 12),  # two groups of 12, not 16 and 8
        (48, {"trials_per_gpu": 24}, 2, 12),
        (4, {"trials_per_gpu": 2}, 2, 2),
    ],
)
def test_a_gpus_groups_are_as_narrow_as_the_trials_it_trains_at_once(
    tmp_path, seeds, resources, gpus, width
):
    from sweeper import cluster

    sweep = load_sweep(write_sweep(tmp_path, seeds=list(range(seeds)), resources=resources))
    placement = cluster.plan_placement(sweep, n_gpus=gpus)
    assert placement.in_groups and placement.group_width == width


def test_a_resumed_sweep_keeps_the_group_width_it_started_with(tmp_path):
    from sweeper.results import write_spec_record
    from sweeper.storage import SweepFolder

    sweep = load_sweep(write_sweep(tmp_path, seeds=[0, 1, 2, 3]))
    folder = SweepFolder(tmp_path / "sweep")
    (tmp_path / "sweep").mkdir()
    assert write_spec_record(folder, sweep, group_width=4, resume=False) == 4
    # resumed on more GPUs, whose plan would be narrower groups: the trials keep their bits
    assert write_spec_record(folder, sweep, group_width=2, resume=True) == 4
