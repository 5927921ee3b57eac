"""An unsupported data file is one line listing the formats labeldistill reads.

Before, a CSV given as data.source got numpy's error about pickled data."""
from __future__ import annotations

import pytest

from labeldistill import cli
from labeldistill import datasets as ds

FORMATS = ("labeldistill datasets", ".npz file", "folder of class folders", "Hugging Face dataset folder",
           "memory:NAME")


@pytest.mark.parametrize("file,content,message", [
    ("d.csv", "label,p0\n1,0\n", "d.csv is a .csv file, not a dataset format labeldistill reads"),
    ("d.txt", "1 0\n", "d.txt is a .txt file, not a dataset format"),
    ("data", "1 0\n", "data is a file without an extension"),
    ("d.npz", "label,p0\n1,0\n", "d.npz is not a .npz archive (not a zip file)"),
])
def test_unsupported_data_file_is_one_line_listing_formats(tmp_path, capsys, file, content, message):
    path = tmp_path / file
    path.write_text(content)
    ds.clear_cache()
    rc = cli.main(["run", "--set", f"data.source={path}", "--set", "data.target=mnist5k",
                   "--out", str(tmp_path / "runs")])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "pickle" not in err
    assert message in err and all(f in err for f in FORMATS)
    assert not (tmp_path / "runs").exists()
