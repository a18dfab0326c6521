"""The LoRA adapters a studio user can pick: the adapter folders directly inside the studio's adapters folder
(`--adapters-dir`, default WORKDIR/adapters), where the Train tab also writes the adapters it trains.

As with models, users choose an adapter by its folder name from this allow-list; the studio never opens a path sent
by a browser, a folder whose real location is outside the adapters folder (a symlink out) is not offered, and a name
not on the list gets the same answer whether or not something by that name exists on the server.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

# The package loads its peft-based modules on first attribute use: peft takes seconds to import, and a studio
# without adapters never needs it.
import finetune.adapters as lora
from data_pipeline.errors import UserError
from finetune.adapters.settings import CONFIG_FILE

NO_ADAPTER = ""  # the dropdown's "none" value
ADAPTER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")  # a name the Train tab may create


class UnknownAdapter(UserError, ValueError):
    """An adapter name that is not on the studio's list."""


@dataclass(frozen=True)
class AdapterChoice:
    name: str  # the folder's name: what the forms send
    path: Path
    base_model_id: str = ""  # the model it was trained on (finetune.model_id)
    problem: str = ""  # why a folder found cannot be offered (empty: usable)

    @property
    def usable(self) -> bool:
        return not self.problem

    @property
    def label(self) -> str:
        return f"{self.name} (for {self.base_model_id.partition('@')[0]})"


def _inside(path: Path, root: Path) -> bool:
    return path.resolve().is_relative_to(root.resolve())


def _choice(path: Path, root: Path) -> AdapterChoice:
    if not _inside(path, root):
        return AdapterChoice(path.name, path, problem="its real location is outside the adapters folder")
    try:
        config = lora.read_adapter_config(path)
    except (UserError, OSError) as exc:  # any malformed folder is reported, never fatal to the studio
        return AdapterChoice(path.name, path, problem=" ".join(str(exc).replace(str(path), path.name).split()))
    return AdapterChoice(path.name, path, config.base_model_id)


def discover_adapters(root: Path | None) -> list[AdapterChoice]:
    """Every folder in `root` that holds an adapter config, usable or not, by name."""
    if root is None or not Path(root).is_dir():
        return []
    folders = sorted(p for p in Path(root).iterdir() if p.is_dir() and (p / CONFIG_FILE).is_file())
    return [_choice(p, Path(root)) for p in folders if not p.name.startswith(".")]


def allowed_adapters(root: Path | None) -> dict[str, AdapterChoice]:
    return {choice.name: choice for choice in discover_adapters(root) if choice.usable}


def resolve_adapter(name: str, root: Path | None) -> AdapterChoice:
    """The allowed adapter `name` names; anything else is refused with one message that reveals nothing."""
    choice = allowed_adapters(root).get(name) if isinstance(name, str) else None
    if choice is None:
        raise UnknownAdapter(
            "that adapter is not one of the studio's adapters; pick one from the list "
            "(press 'Refresh model list' to see new ones)"
        )
    return choice


def new_adapter_folder(name: str, root: Path) -> Path:
    """Where the Train tab writes adapter `name`: a new folder in the adapters folder (never an existing one)."""
    if not isinstance(name, str) or not ADAPTER_NAME.match(name):
        raise UnknownAdapter(
            "an adapter name is 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    folder = Path(root) / name
    if folder.exists():
        raise UnknownAdapter(f"an adapter named {name!r} already exists; choose another name")
    return folder
