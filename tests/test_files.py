"""The atomic write helpers every writer of user files goes through."""

import json
import threading

import pytest

from kerastrain.files import atomic_path, atomic_write, write_json


def test_atomic_path_keeps_the_old_file_when_writing_fails(tmp_path):
    final = tmp_path / "model.tflite"
    final.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_path(final) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("interrupted")
    assert final.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["model.tflite"]
    with atomic_path(final) as tmp:
        assert tmp.suffix == ".tflite" and tmp.parent == tmp_path
        tmp.write_bytes(b"new")
    assert final.read_bytes() == b"new"


def test_atomic_path_replaces_a_directory_whole(tmp_path):
    final = tmp_path / "savedmodel"
    final.mkdir()
    (final / "stale.pb").write_text("old")
    with atomic_path(final) as tmp:
        tmp.mkdir()
        (tmp / "saved_model.pb").write_text("new")
    assert [p.name for p in final.iterdir()] == ["saved_model.pb"]


def test_nothing_written_is_an_error_and_leaves_no_temporary(tmp_path):
    with pytest.raises(FileNotFoundError, match="Nothing was written"):
        with atomic_path(tmp_path / "x.json"):
            pass
    assert list(tmp_path.iterdir()) == []


def test_concurrent_writers_never_share_a_temporary_name(tmp_path):
    path = tmp_path / "state.json"
    errors = []

    def write(i):
        try:
            for _ in range(50):
                write_json(path, {"writer": i, "payload": "x" * 1000})
        except Exception as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert json.loads(path.read_text())["payload"] == "x" * 1000
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_atomic_write_takes_text_and_bytes(tmp_path):
    assert atomic_write(tmp_path / "a.txt", "é").read_text(encoding="utf-8") == "é"
    assert atomic_write(tmp_path / "b.bin", b"\x00\x01").read_bytes() == b"\x00\x01"
