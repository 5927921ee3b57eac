"""Named configs that ship inside the package (as torchtune's `tune ls` / `tune cp`).

`labeldistill run mnist_best_100` works from an installed wheel, outside a
clone: a config argument that is not a file is looked up here by its name (the
file name without `.yaml`). In a clone, `configs/examples` and `configs/tiny`
are links to these folders, so the paths in the docs work there too.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError, did_you_mean

FOLDER = Path(__file__).resolve().parent / "configs"


@dataclass(frozen=True)
class NamedConfig:
    name: str
    group: str  # the folder: examples, tiny
    path: Path

    @property
    def description(self) -> str:
        """The first sentence of the file's opening comment, on one line of at most 100 characters."""
        lines = []
        for line in self.path.read_text().splitlines():
            if not line.startswith("#"):
                break
            lines.append(line.lstrip("#").strip())
        text = " ".join(lines)
        if ". " in text:
            text = text[:text.index(". ") + 1]
        return text if len(text) <= 100 else text[:97].rstrip() + "..."


def named_configs() -> dict[str, NamedConfig]:
    """Every shipped config by name, in folder then name order."""
    out: dict[str, NamedConfig] = {}
    for path in sorted(FOLDER.glob("*/*.yaml")):
        name = path.stem
        if name in out:  # a packaging error, not a user's: names must be unique across folders
            raise ConfigError(f"two shipped configs are named '{name}': {out[name].path} and {path}")
        out[name] = NamedConfig(name, path.parent.name, path)
    return out


def find(name: str) -> Path | None:
    """The shipped file for `name` (with or without `.yaml`), or None."""
    stem = name[:-5] if name.endswith(".yaml") else name
    if "/" in stem or "\\" in stem:
        return None
    found = named_configs().get(stem)
    return found.path if found is not None else None


def copy_config(name: str, dest: str | Path | None = None, force: bool = False) -> Path:
    """Copy a shipped config to `dest` (a file, or a folder to copy it into; default ./NAME.yaml)
    so that the user has an editable file."""
    src = find(name)
    if src is None:
        raise ConfigError(f"no shipped config named '{name}'{did_you_mean(name, named_configs())}; "
                          "`labeldistill configs` lists them")
    target = Path(dest) if dest is not None else Path(f"{src.stem}.yaml")
    if target.is_dir():
        target = target / src.name
    if target.exists() and not force:
        raise ConfigError(f"{target} exists; choose another destination or pass --force to replace it")
    if not target.parent.is_dir():
        raise ConfigError(f"cannot copy to {target}: the folder {target.parent} does not exist")
    shutil.copyfile(src, target)
    return target
