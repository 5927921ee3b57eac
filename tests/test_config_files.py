"""Config files are parsed by their extension, and a parse error keeps its line and column.

Before, a `.toml` config was parsed as JSON, and a YAML tab error had no line number."""
from __future__ import annotations

import pytest

from labeldistill import cli
from labeldistill import config as C
from labeldistill.errors import ConfigError


def test_toml_is_read_as_toml(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text('name = "t"\nmethod = "baseline"\nseed = 3\n[data]\nsource = "mnist5k"\ntarget = "mnist5k"\n'
                 'num_base_examples = 20\n[distill]\nepochs = 2\n')
    cfg = C.load(p, ["evaluate.num_test_models=2"])
    assert (cfg.name, cfg.method, cfg.seed) == ("t_num_test_models=2", "baseline", 3)  # the override names the run
    assert (cfg.data.num_base_examples, cfg.distill.epochs) == (20, 2)
    assert cfg.evaluate.num_test_models == 2


@pytest.mark.parametrize("name,text,where", [
    ("tab.yaml", "name: x\ndata:\n\tsource: mnist5k\n", "line 3, column 1: while scanning for the next token, "
                                                        "found character '\\t'"),
    ("bad.yml", "name: x\ndata: [1, 2\nseed: 1\n", "line 3, column 5"),
    ("bad.json", '{"name": "x",\n "data": {"source" "mnist5k"}}', "line 2, column 20: Expecting ':' delimiter"),
    ("bad.toml", 'name = "x"\n[data]\nsource = mnist5k\n', "(at line 3, column 10)"),
])
def test_parse_errors_keep_line_and_column(tmp_path, name, text, where):
    p = tmp_path / name
    p.write_text(text)
    with pytest.raises(ConfigError) as info:
        C.load(p)
    msg = str(info.value)
    assert msg.startswith(f"cannot parse {p}: ") and where in msg and "\n" not in msg


@pytest.mark.parametrize("name,content,message", [
    ("c.cfg", b"{}", "unknown config file type '.cfg'; use .yaml, .yml, .json, .toml"),
    ("c", b"{}", "unknown config file type ''; use .yaml, .yml, .json, .toml"),
    ("c.yaml", b"\xff\xfe\x00binary", "is not a text file"),
])
def test_unknown_or_binary_files_are_one_line_via_the_cli(tmp_path, capsys, name, content, message):
    p = tmp_path / name
    p.write_bytes(content)
    assert cli.main(["show-config", str(p)]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
