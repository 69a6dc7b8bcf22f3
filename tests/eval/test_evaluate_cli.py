"""`tvae evaluate` runs where it is told (`--device`), reads the model's own window by default
and reports the per-distance buckets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from cli_contract import invoke

from tests.paths import DATA


def test_evaluate_takes_a_device_and_reports_distances(tiny_ckpt: Path) -> None:
    got = invoke(["evaluate", DATA, "--model", tiny_ckpt, "--device", "cpu", "--json"])
    assert got.code == 0, got.err
    result = json.loads(got.out)
    assert set(result["by_distance"]) == {"1-4", "5-8", "9-16", "17-32"}
    assert result["windows"] == 4  # the four example songs, one window each


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_evaluate_on_a_missing_device_is_one_line(tiny_ckpt: Path) -> None:
    got = invoke(["evaluate", DATA, "--model", tiny_ckpt, "--device", "cuda"])
    assert got.code == 2 and got.crash is None
    assert "CUDA is not available" in got.err and len(got.err.strip().splitlines()) == 1


def test_help_quotes_the_bundled_model_card_not_hard_coded_numbers(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """`tvae transfer --help` and `tvae encode --help` read their numbers from the card: a
    different card gives different numbers, and no card gives none."""
    import tvae.cli.card_help as card_help

    card = {"data": "songs (test)", "transfer_follow_rate": 0.5, "transfer_spurious_rate": 0.02,
            "kl_bits_repeated": 3.25, "kl_bits_new": 12.0,
            "by_distance": {"1-4": {"transfer_follow": 0.75}}}
    path = tmp_path / "weights" / "default.json"
    path.parent.mkdir()
    path.write_text(json.dumps({"evaluation": card}))
    monkeypatch.setattr(card_help, "__file__", str(tmp_path / "cli" / "card_help.py"))
    text = card_help.transfer_help()
    assert "on songs (test)" in text and "50% of B's repeats" in text and "75% 1-4" in text
    assert "2.0% of B's other bars" in text
    assert "3.2 bits for a repeated bar, 12.0 for a new one" in card_help.encode_help()
    path.write_text("{}")
    assert "bundled model" not in card_help.transfer_help() + card_help.encode_help()


def test_evaluate_record_puts_a_model_card_in_the_checkpoint(tiny_ckpt: Path, tmp_path: Path,
                                                            folk_corpus: Path) -> None:
    import json
    import shutil

    from click.testing import CliRunner

    from tvae.cli.main import main
    from tvae.inference import load_model

    for suffix in (".json", ".safetensors"):
        shutil.copy(tiny_ckpt.with_suffix(suffix), tmp_path / f"m{suffix}")
    model = tmp_path / "m.json"
    weights = (tmp_path / "m.safetensors").read_bytes()
    r = CliRunner().invoke(main, ["evaluate", str(folk_corpus), "--model", str(model), "--bars",
                                  "4", "--json", "--record"])
    assert r.exit_code == 0, r.output
    result = json.loads(r.stdout)
    card = json.loads(model.read_text())["evaluation"]
    assert card["free_accuracy"] == result["free_accuracy"] and card["data"] == "corpus (test)"
    assert (tmp_path / "m.safetensors").read_bytes() == weights

    from tvae.outputs import describe_model

    line = describe_model(load_model(model))
    assert f"on corpus (test): free-running accuracy {result['free_accuracy']:.3f}" in line
