"""The results table: all-or-nothing appends under a lock, and readers that refuse damaged rows."""
from __future__ import annotations

import csv
import errno
import os
import subprocess
import sys

import pytest

import utils.results.table as results_table
from tests.conftest import REPO_ROOT
from utils.run.errors import DataError, ToolkitError
from utils.results.table import append_row, read_rows

COLUMNS = ("name", "value", "note")


def row(i: int) -> dict:
    return {"name": f"run{i}", "value": i / 7, "note": "a, quoted \"cell\""}


def test_append_writes_header_once_and_reads_back(tmp_path):
    table = tmp_path / "sub" / "table.csv"
    for i in range(3):
        append_row(table, COLUMNS, row(i), flag="--t")
    with open(table, newline="") as handle:
        parsed = list(csv.reader(handle))
    assert parsed[0] == list(COLUMNS) and len(parsed) == 4
    assert parsed[2] == ["run1", str(1 / 7), "a, quoted \"cell\""]
    rows = read_rows(table, COLUMNS, flag="--t", writer="w")
    assert [r["line"] for r in rows] == [2, 3, 4] and rows[1]["value"] == str(1 / 7)


def test_other_columns_refused(tmp_path):
    table = tmp_path / "t.csv"
    table.write_text("a,b\r\n1,2\r\n")
    with pytest.raises(ToolkitError, match="other columns"):
        append_row(table, COLUMNS, row(0), flag="--t")


@pytest.mark.parametrize("written", [None, 5])
def test_failed_append_leaves_table_byte_identical(tmp_path, monkeypatch, written):
    """A full disk: the write fails outright (None), or writes 5 bytes and then fails. Before the
    fix, the partial row stayed and the next row was glued onto it."""
    table = tmp_path / "t.csv"
    append_row(table, COLUMNS, row(0), flag="--t")
    before = table.read_bytes()
    real_write = os.write

    def full_disk(fd, data):
        if written:
            real_write(fd, data[:written])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(results_table.os, "write", full_disk)
    with pytest.raises(ToolkitError, match="No space left on device.*table is unchanged"):
        append_row(table, COLUMNS, row(1), flag="--t")
    monkeypatch.undo()
    assert table.read_bytes() == before
    append_row(table, COLUMNS, row(2), flag="--t")
    assert [r["name"] for r in read_rows(table, COLUMNS, flag="--t", writer="w")] == ["run0", "run2"]


def test_short_write_counts_as_failure(tmp_path, monkeypatch):
    table = tmp_path / "t.csv"
    append_row(table, COLUMNS, row(0), flag="--t")
    before = table.read_bytes()
    real_write = os.write
    monkeypatch.setattr(results_table.os, "write", lambda fd, data: real_write(fd, data[:3]))
    with pytest.raises(ToolkitError, match="table is unchanged"):
        append_row(table, COLUMNS, row(1), flag="--t")
    assert table.read_bytes() == before


def test_full_tmpfs(tmp_path):
    """The real thing where the machine lets us mount a small tmpfs (root); skipped elsewhere."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8k", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        table = mount / "t.csv"
        append_row(table, COLUMNS, row(0), flag="--t")
        filler = os.open(mount / "filler", os.O_WRONLY | os.O_CREAT)
        try:  # fill the rest of the disk
            while os.write(filler, b"x" * 512):
                pass
        except OSError:
            pass
        finally:
            os.close(filler)
        before = table.read_bytes()
        with pytest.raises(ToolkitError, match="table is unchanged"):
            append_row(table, COLUMNS, {"name": "y" * 4096, "value": 1, "note": ""}, flag="--t")
        assert table.read_bytes() == before
    finally:
        subprocess.run(["umount", str(mount)], check=False)


APPENDER = """
import sys
from utils.results.table import append_row
worker = int(sys.argv[1])
for i in range(50):
    append_row(sys.argv[2], ("worker", "index", "payload"), {"worker": worker, "index": i, "payload": "z" * (97 * worker + i)},
               flag="--t")
"""


def test_concurrent_appends_do_not_interleave(tmp_path):
    """8 processes appending 50 rows each give 400 well-formed rows, each worker's in order."""
    table = tmp_path / "t.csv"
    workers = [subprocess.Popen([sys.executable, "-c", APPENDER, str(w), str(table)], cwd=REPO_ROOT)
               for w in range(8)]
    assert all(worker.wait(timeout=120) == 0 for worker in workers)
    rows = read_rows(table, ("worker", "index", "payload"), flag="--t", writer="w")
    assert len(rows) == 400
    for w in range(8):
        mine = [r for r in rows if r["worker"] == str(w)]
        assert [int(r["index"]) for r in mine] == list(range(50))
        assert all(r["payload"] == "z" * (97 * w + int(r["index"])) for r in mine)


def test_reader_refuses_a_cut_row_with_its_line(tmp_path):
    table = tmp_path / "t.csv"
    table.write_text("name,value,note\r\nrun0,1,x\r\nrun1,0.5")
    with pytest.raises(DataError, match="line 3 is cut short"):
        read_rows(table, COLUMNS, flag="--t", writer="w")
    with pytest.raises(ToolkitError, match="last line \\(3\\) is cut short"):
        append_row(table, COLUMNS, row(2), flag="--t")


def test_reader_refuses_a_glued_row(tmp_path):
    table = tmp_path / "t.csv"
    table.write_text("name,value,note\r\nrun0,1,x\r\nrun1,0.5run2,3,y,z\r\nrun3,1,x\r\n")
    with pytest.raises(DataError, match="line 3 has 5 cells where the header has 3"):
        read_rows(table, COLUMNS, flag="--t", writer="w")
