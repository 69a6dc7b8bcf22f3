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


def _table_row(text: str, start: str) -> list[str]:
    rows = [line for line in text.splitlines() if line.startswith(start)]
    assert len(rows) == 1, f"README: expected one row starting {start!r}, found {len(rows)}"
    return [cell.strip() for cell in rows[0].strip("|").split("|")]


def test_readme_card_is_the_bundled_models_card() -> None:
    """The README's model-card tables quote the card recorded inside the bundled weights
    (`tvae evaluate --record`), every distance bucket included: a retrained model whose
    README was not regenerated fails here."""
    import json

    card = json.loads((ROOT / "tvae" / "weights" / "default.json").read_text())["evaluation"]
    text = (ROOT / "README.md").read_text()
    section = text.split("## The bundled model", 1)[1].split("\n## ", 1)[0]
    for start, key, digits in (("| free-running accuracy (", "free_accuracy", 3),
                               ("| teacher-forced accuracy |", "tf_accuracy", 3),
                               ("| KL, bits per bar |", "kl_bits_per_bar", 1),
                               ("| ELBO, bits per bar", "elbo_bits_per_bar", 1),
                               ("| near-repeats whose change comes back", "near_changes_kept", 2)):
        assert _table_row(section, start)[1] == f"{card[key]:.{digits}f}", key
    for bucket, row in card["by_distance"].items():
        cells = _table_row(section, f"| {bucket.replace('-', '–')} |")
        assert cells[1] == f"{row['repeats']:,}"
        assert cells[2] == f"{row['copy_accuracy']:.2f}"
        assert cells[4] == f"{row['kl_bits']:.1f}"
        assert cells[5] == str(row["transfer_cases"])
        assert cells[6] == f"{row['transfer_follow']:.2f}"
