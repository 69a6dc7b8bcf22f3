"""The README's Python example runs as written, with the bundled model."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.paths import ROOT


def _python_blocks(section: str) -> list[str]:
    text = (ROOT / "README.md").read_text()
    part = text.split(f"## {section}", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", part, flags=re.S)


def test_readme_api_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = _python_blocks("The Python API")
    assert blocks, "the README lost its Python example"
    (tmp_path / "data").symlink_to(ROOT / "data")
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)  # noqa: S102
    assert (tmp_path / "mary_x_jingle.mid").is_file()
    assert len(namespace["path"]) == 5  # type: ignore[arg-type]


def test_quick_start_has_exactly_two_commands() -> None:
    text = (ROOT / "README.md").read_text()
    quick = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"```bash\n(.*?)```", quick, flags=re.S)
    assert len(commands) == 2
    ci = (ROOT / ".ci" / "run").read_text()
    assert commands[1].strip() in ci  # CI runs the README's test command exactly


def test_every_recipe_is_a_config_that_tvae_train_reads() -> None:
    """recipes/*.json are `tvae train --config` files: each one's sections build valid configs
    and name the exported corpus as their data folder."""
    from tvae.cli.train import _config_file
    from tvae.config import DataConfig, TrainConfig

    recipes = sorted((ROOT / "recipes").glob("*.json"))
    assert len(recipes) >= 5
    for recipe in recipes:
        bases, folders = _config_file(str(recipe))
        assert folders == ("corpus",) and DataConfig in bases and TrainConfig in bases
    short, _ = _config_file(str(ROOT / "recipes" / "short_9bars.json"))
    assert short[DataConfig].bars == 9 and short[TrainConfig].max_minutes == 12.0
