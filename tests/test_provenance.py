import importlib.metadata
import json
import subprocess
import sys
from pathlib import Path

import git
import pytest
import torch

from trainables import provenance
from trainables.provenance import driver_version, get_environment_info, strip_credentials
from trainables.run_record import GitInfo, SystemInfo

SECTION_KEYS = {
    "git": {"commit", "branch", "is_dirty", "remote_url"},
    "system": {
        "python_version",
        "platform",
        "processor",
        "hostname",
        "torch_version",
        "pytorch_version",
        "cuda_available",
        "cuda_version",
        "cudnn_version",
        "gpu_count",
        "gpu_names",
        "gpu_memory",
        "gpu_sm_counts",
        "gpu_capabilities",
        "nvidia_driver",
        "cublas_version",
        "triton_version",
        "cpu_capability",
        "cpu_count",
        "torch_num_threads",
    },
}
# Among every installed distribution, the ones the project depends on, by normalized name.
CORE_PACKAGES = {"torch", "numpy", "scanpy", "anndata", "ray", "wandb", "pyyaml", "gitpython"}
NO_GIT = dict.fromkeys(SECTION_KEYS["git"])
AUTHOR = git.Actor("Test", "test@example.com")


@pytest.fixture
def repo(tmp_path):
    """A repository on branch ``main`` with one commit of ``data.txt``."""
    repo = git.Repo.init(tmp_path / "repo", initial_branch="main")
    (tmp_path / "repo" / "data.txt").write_text("one\n")
    repo.index.add(["data.txt"])
    repo.index.commit("first", author=AUTHOR, committer=AUTHOR)
    yield repo
    repo.close()


def _root(repo):
    return Path(repo.working_tree_dir)


@pytest.fixture
def outside(tmp_path):
    """A directory that is not inside any repository."""
    path = tmp_path / "plain"
    path.mkdir()
    return path


# --- shape ---------------------------------------------------------------------------------


def test_top_level_keys(outside):
    assert set(get_environment_info(outside)) == {*SECTION_KEYS, "packages"}


@pytest.mark.parametrize("section", sorted(SECTION_KEYS))
def test_section_keys(repo, section):
    assert set(get_environment_info(_root(repo))[section]) == SECTION_KEYS[section]


@pytest.mark.parametrize(("record", "section"), [(GitInfo, "git"), (SystemInfo, "system")])
def test_the_run_record_types_every_collected_field(record, section):
    assert set(record.__dataclass_fields__) == SECTION_KEYS[section]


def test_packages_are_every_installed_distribution(outside):
    packages = get_environment_info(outside)["packages"]
    assert set(packages) >= CORE_PACKAGES
    installed = {
        d.metadata["Name"].lower().replace("_", "-") for d in importlib.metadata.distributions()
    }
    installed = {n.replace(".", "-") for n in installed} | {"pytorch"}  # torch's, again
    assert set(packages) == installed
    assert packages["pytorch"] == packages["torch"]
    assert list(packages) == sorted(packages)


@pytest.mark.parametrize(
    ("text", "version"),
    [
        (
            "NVRM version: NVIDIA UNIX x86_64 Kernel Module  580.159.04  Sun Oct 12 2025\n",
            "580.159.04",
        ),
        (
            "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  570.86.15  Release\n",
            "570.86.15",
        ),
        ("something else", None),
    ],
)
def test_driver_version_is_read_from_proc_text(text, version):
    assert driver_version(text) == version


def test_cpu_capability_is_torch_s():
    info = get_environment_info()
    assert info["system"]["cpu_capability"] == torch.backends.cpu.get_cpu_capability()


def test_versions_come_from_installed_metadata(outside):
    info = get_environment_info(outside)
    assert info["packages"]["torch"] == importlib.metadata.version("torch")
    assert info["system"]["torch_version"] == str(torch.__version__)  # may add "+cu130", "+cpu"
    assert info["packages"]["gitpython"] == git.__version__


def test_result_is_json_serialisable(repo):
    info = get_environment_info(_root(repo))
    assert json.loads(json.dumps(info)) == info


def test_without_cuda_device_lists_are_empty(outside, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    system = get_environment_info(outside)["system"]
    assert system["cuda_available"] is False
    assert (system["gpu_count"], system["gpu_names"], system["gpu_memory"]) == (0, [], [])


def test_does_not_import_heavy_packages():
    code = (
        "import sys; from trainables.provenance import get_environment_info; "
        "get_environment_info(); "
        "print([m for m in ('anndata', 'scanpy', 'ray', 'wandb') if m in sys.modules])"
    )
    root = Path(provenance.__file__).parents[1]  # `python -c` imports from its cwd
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root
    )
    assert out.stdout.strip() == "[]"


# --- git -----------------------------------------------------------------------------------


def test_clean_repo(repo):
    assert get_environment_info(_root(repo))["git"] == {
        "commit": repo.head.commit.hexsha,
        "branch": "main",
        "is_dirty": False,
        "remote_url": None,
    }


def test_modified_tracked_file_makes_repo_dirty(repo):
    (_root(repo) / "data.txt").write_text("one\ntwo\n")
    assert get_environment_info(_root(repo))["git"]["is_dirty"] is True


def test_untracked_file_does_not_make_repo_dirty(repo):
    (_root(repo) / "new.txt").write_text("new\n")
    assert get_environment_info(_root(repo))["git"]["is_dirty"] is False


def test_path_below_the_repository_root_finds_it(repo):
    sub = _root(repo) / "sub" / "dir"
    sub.mkdir(parents=True)
    assert get_environment_info(sub)["git"]["commit"] == repo.head.commit.hexsha


def test_detached_head_has_no_branch(repo):
    commit = repo.head.commit.hexsha
    repo.head.reference = repo.head.commit  # detach
    git_info = get_environment_info(_root(repo))["git"]
    assert (git_info["commit"], git_info["branch"]) == (commit, None)


def test_repo_without_commits_has_no_commit(tmp_path):
    with git.Repo.init(tmp_path / "empty"):
        assert get_environment_info(tmp_path / "empty")["git"]["commit"] is None


@pytest.mark.parametrize("where", ["outside", "missing"])
def test_outside_any_repo_git_fields_are_none(outside, where):
    path = outside if where == "outside" else outside / "does-not-exist"
    info = get_environment_info(path)
    assert info["git"] == NO_GIT
    assert info["system"]["python_version"] and info["packages"]["torch"]


def test_gitpython_without_git_binary_gives_none(repo, monkeypatch):
    monkeypatch.setitem(sys.modules, "git", None)  # `import git` raises ImportError, as then
    assert get_environment_info(_root(repo))["git"] == NO_GIT


def test_git_binary_missing_at_call_time_does_not_raise(repo, monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path / "no-bin"))
    git_info = get_environment_info(_root(repo))["git"]
    assert git_info["is_dirty"] is None  # needs `git diff`; the rest reads .git directly


def test_default_path_is_the_package_checkout(repo, outside, monkeypatch):
    monkeypatch.setattr(provenance, "_PACKAGE_DIR", _root(repo))
    monkeypatch.chdir(outside)
    assert get_environment_info()["git"]["commit"] == repo.head.commit.hexsha


def test_default_path_falls_back_to_cwd(repo, outside, monkeypatch):
    monkeypatch.setattr(provenance, "_PACKAGE_DIR", outside)
    monkeypatch.chdir(_root(repo))
    assert get_environment_info()["git"]["commit"] == repo.head.commit.hexsha


# --- remotes and credentials ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://user:token@host/x.git", "https://host/x.git"),
        ("https://token@host/x.git", "https://host/x.git"),
        ("https://user:p@ss@host:8443/x.git", "https://host:8443/x.git"),
        ("http://oauth2:tok@gitlab.example.org/g/x.git", "http://gitlab.example.org/g/x.git"),
        ("https://github.com/org/x.git", "https://github.com/org/x.git"),
        ("ssh://git@github.com/org/x.git", "ssh://git@github.com/org/x.git"),
        ("ssh://git:secret@host/x.git", "ssh://git@host/x.git"),
        ("git@github.com:org/x.git", "git@github.com:org/x.git"),
        ("/srv/git/x.git", "/srv/git/x.git"),
        ("file:///srv/git/x.git", "file:///srv/git/x.git"),
    ],
)
def test_strip_credentials(url, expected):
    assert strip_credentials(url) == expected


def test_remote_credentials_never_leak(repo):
    repo.create_remote("origin", "https://user:s3cr3t@example.org/org/x.git")
    info = get_environment_info(_root(repo))
    assert info["git"]["remote_url"] == "https://example.org/org/x.git"
    assert "s3cr3t" not in json.dumps(info)


def test_origin_is_preferred_over_other_remotes(repo):
    repo.create_remote("backup", "https://backup.example.org/x.git")
    repo.create_remote("origin", "https://example.org/x.git")
    assert get_environment_info(_root(repo))["git"]["remote_url"] == ("https://example.org/x.git")
