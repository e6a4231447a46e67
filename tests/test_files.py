import json
import os

import pytest

from trainables.files import ResultFileError, atomic_write_json
from trainables.run_record import RunRecord
from trainables.schema import read_record


def test_a_crash_while_writing_leaves_the_old_file_whole(tmp_path, monkeypatch):
    path = tmp_path / "summary.json"
    atomic_write_json(path, {"trials": [1, 2, 3]})

    def crash(*args):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_json(path, {"trials": []})
    assert json.loads(path.read_text()) == {"trials": [1, 2, 3]}
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]  # no temporary left


def test_floats_survive_a_round_trip_bit_for_bit(tmp_path):
    values = [0.1, 1 / 3, 2.0**-1074, 1e308, -0.0]
    atomic_write_json(tmp_path / "x.json", values)
    back = json.loads((tmp_path / "x.json").read_text())
    assert [v.hex() for v in back] == [v.hex() for v in values]


def test_written_files_follow_the_umask_not_mkstemps_0600(tmp_path):
    old = os.umask(0o022)
    try:
        path = atomic_write_json(tmp_path / "x.json", {})
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (None, "file not found"),
        ("{", "corrupt JSON"),
        ("[]", "not a valid run.json: expected a mapping, got \\[\\]"),
        (
            '{"schema_version": "1"}',
            "not a valid run.json: key 'schema_version': expected an integer",
        ),
        ('{"schema_version": 1}', "not a valid run.json: key 'finished_at': missing"),
        ('{"nosuch": 1}', "not a valid run.json: key 'nosuch': unknown key"),
    ],
)
def test_a_record_reader_names_the_file_and_the_key(tmp_path, content, reason):
    path = tmp_path / "run.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ResultFileError, match=f"run.json: {reason}") as info:
        read_record(RunRecord, path)
    assert "\n" not in str(info.value)
