"""`tvae prepare`: sharded, memory-mapped song arrays equal to what `load_folder` reads, and
training on them equals training on the MIDI folder."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from cli_contract import songs_with_broken_files
from click.testing import CliRunner

from tests.paths import DATA
from tests.tiny import TINY_MODEL
from tvae.cli.main import main
from tvae.config import DataConfig, GridConfig, TrainConfig
from tvae.data.dataset import SongArrays, load_folder
from tvae.data.prepare import (
    ShardTokens,
    is_prepared,
    load_prepared,
    parse_shard,
    prepare_folder,
    shard_of,
)
from tvae.data.windows import Windows
from tvae.errors import TvaeError, TvaeWarning
from tvae.melody import Melody, Note
from tvae.midi import write_melody
from tvae.training.run import train


@pytest.fixture(scope="module")
def folder_songs(folk_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> SongArrays:
    cache = tmp_path_factory.mktemp("cache")
    return load_folder(folk_corpus, label_column="collection", cache_dir=cache,
                       progress=False)[0]


@pytest.fixture(scope="module")
def prepared(folk_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("prepared")
    prepare_folder(folk_corpus, out, workers=1, progress=False)
    return out


@pytest.fixture(scope="module")
def three_shards(folk_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sharded")
    for index in range(3):
        prepare_folder(folk_corpus, out, shard=(index, 3), workers=1, progress=False)
    return out


def _by_path(songs: SongArrays) -> dict[str, tuple]:
    return {p: (songs.song(i).tokens.tolist(), songs.song(i).meter, songs.song(i).pickup,
                songs.song(i).qpm, str(songs.splits[i]), songs.labels[i] if songs.labels else None)
            for i, p in enumerate(songs.paths)}


def test_prepared_songs_equal_the_folder_and_are_memory_mapped(
        prepared: Path, folder_songs: SongArrays) -> None:
    songs, skipped = load_prepared([prepared], label_column="collection")
    assert isinstance(songs.tokens, np.memmap) and songs.tokens.dtype == np.uint8
    assert skipped == {}
    assert songs.paths == folder_songs.paths
    assert np.array_equal(songs.tokens, folder_songs.tokens)
    assert np.array_equal(songs.offsets, folder_songs.offsets)
    assert _by_path(songs) == _by_path(folder_songs)


def test_shard_folder_layout_and_manifest(prepared: Path, folk_corpus: Path) -> None:
    shard = prepared / "shard-0-of-1"
    assert is_prepared(prepared) and is_prepared(shard) and not is_prepared(folk_corpus)
    marker = json.loads((shard / "prepared.json").read_text())
    tokens = np.load(shard / "tokens.npy", mmap_mode="r")
    assert tokens.shape == (marker["bars"], 16)
    assert len(np.load(shard / "offsets.npy")) == marker["songs"] + 1
    with open(shard / "manifest.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    with open(folk_corpus / "manifest.csv", newline="") as handle:
        source = {r["path"]: r for r in csv.DictReader(handle)}
    assert len(rows) == marker["songs"]
    offsets = np.load(shard / "offsets.npy")
    for i, row in enumerate(rows):  # the source manifest's columns are kept, bars are ours
        assert row["split"] == source[row["path"]]["split"]
        assert row["collection"] == source[row["path"]]["collection"]
        assert int(row["bars"]) == offsets[i + 1] - offsets[i]


@pytest.mark.filterwarnings("ignore:.*of 3 are missing")
def test_shards_split_the_files_and_merge_back(three_shards: Path,
                                               folder_songs: SongArrays) -> None:
    parts = [load_prepared([three_shards / f"shard-{i}-of-3"])[0] for i in range(3)]
    paths = [set(p.paths) for p in parts]
    assert all(paths) and not (paths[0] & paths[1] or paths[0] & paths[2] or paths[1] & paths[2])
    assert all(shard_of(rel, 3) == i for i, names in enumerate(paths) for rel in names)
    merged, _ = load_prepared([three_shards], label_column="collection")  # the parent folder
    assert isinstance(merged.tokens, ShardTokens)
    assert _by_path(merged) == _by_path(folder_songs)
    listed, _ = load_prepared([three_shards / f"shard-{i}-of-3" for i in (2, 0, 1)])
    assert listed.paths == merged.paths  # shard folders listed in any order: shard order


def test_shard_tokens_index_like_one_array() -> None:
    rng = np.random.default_rng(0)
    parts = [rng.integers(0, 50, (n, 4), dtype=np.uint8) for n in (3, 0, 5, 2)]
    whole, joined = np.concatenate(parts), ShardTokens(parts)
    assert len(joined) == 10 and joined.shape == whole.shape
    index = rng.integers(0, 10, (6, 3))
    assert np.array_equal(joined[index], whole[index])
    assert np.array_equal(joined[2:7], whole[2:7]) and np.array_equal(joined[9], whole[9])


def test_windows_batches_from_shards_equal_the_folder(three_shards: Path) -> None:
    merged, _ = load_prepared([three_shards])
    flat = SongArrays(np.asarray(merged.tokens[: len(merged.tokens)]), merged.offsets,
                      merged.meters, merged.pickups, merged.paths, merged.splits)
    data = DataConfig(bars=4, stride=2)
    a, b = Windows(merged, "train", data), Windows(flat, "train", data)
    idx = np.arange(len(a))[::3]
    for x, y in zip(a.batch(idx, np.random.default_rng(1)), b.batch(idx,
                    np.random.default_rng(1)), strict=True):
        assert np.array_equal(x, y)


def test_skipped_files_are_listed_with_their_reason(folk_corpus: Path, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for rel in ("essenFolksong", "oneills1850"):
        for path in sorted((folk_corpus / rel).glob("*.mid"))[:2]:
            (src / path.name).write_bytes(path.read_bytes())
    (src / "empty.mid").write_bytes(b"")
    (src / "noise.mid").write_bytes(b"MThd garbage" * 5)
    info = prepare_folder(src, tmp_path / "out", workers=1, progress=False)
    with open(Path(info["folder"]) / "skipped.csv", newline="") as handle:
        rows = {r["path"]: r["reason"] for r in csv.DictReader(handle)}
    assert set(rows) == {"empty.mid", "noise.mid"} and all(rows.values())
    assert info["songs"] == 4 and sum(info["skipped"].values()) == 2
    songs, skipped = load_prepared([info["folder"]])
    assert skipped == info["skipped"]
    hashed = load_folder(src, cache_dir=tmp_path / "cache", progress=False)[0]  # no manifest
    assert _by_path(songs) == _by_path(hashed)  # splits decided by the same content hash
    other = DataConfig(valid_fraction=0.5, test_fraction=0.3)
    resplit = load_prepared([info["folder"]], data=other)[0]
    again = load_folder(src, data=other, cache_dir=tmp_path / "cache", progress=False)[0]
    assert resplit.splits.tolist() == again.splits.tolist()


@pytest.mark.filterwarnings("ignore:.*of 3 are missing")
def test_refusals(prepared: Path, three_shards: Path, folk_corpus: Path, tmp_path: Path) -> None:
    with pytest.raises(TvaeError, match="already prepared"):
        prepare_folder(folk_corpus, prepared, progress=False)
    for text in ("3", "2/2", "a/b", "-1/3"):
        with pytest.raises(TvaeError, match="--shard"):
            parse_shard(text)
    with pytest.raises(TvaeError, match="grid"):
        load_prepared([prepared], grid=GridConfig(max_pitch=90))
    with pytest.raises(TvaeError, match="not a prepared folder"):
        load_prepared([tmp_path])
    partial = tmp_path / "partial"
    for index in (0, 2):
        shutil.copytree(three_shards / f"shard-{index}-of-3", partial / f"shard-{index}-of-3")
    with pytest.warns(TvaeWarning, match=r"shards \[1\] of 3 are missing"):
        songs, _ = load_prepared([partial])
    assert songs.n_songs == sum(load_prepared([partial / f"shard-{i}-of-3"])[0].n_songs
                                for i in (0, 2))
    with pytest.raises(TvaeError, match="twice"):
        load_prepared([partial, partial / "shard-0-of-3"])


def test_cli_prepare_then_train_equals_training_on_the_folder(
        folk_corpus: Path, tmp_path: Path, torch_one_thread: None) -> None:
    result = CliRunner().invoke(main, ["prepare", str(folk_corpus), str(tmp_path / "prep"),
                                       "--workers", "1", "--quiet"])
    assert result.exit_code == 0, result.output
    assert "shard-0-of-1" in result.output and "songs" in result.output
    model = TINY_MODEL
    cfg = TrainConfig(batch_size=8, epochs=1, max_steps=4, log_every=1, eval_windows=8,
                      num_threads=1)
    for name, source in (("folder", folk_corpus), ("prepared", tmp_path / "prep")):
        train(source, tmp_path / name, model_config=model, data_config=DataConfig(bars=4),
              train_config=cfg, progress=False)
    metrics = [(tmp_path / n / "metrics.csv").read_text().splitlines() for n in
               ("folder", "prepared")]
    strip = [[",".join(line.split(",")[:-1]) for line in m] for m in metrics]  # not 'seconds'
    assert strip[0] == strip[1] and len(strip[0]) == 6


def test_evaluate_reads_a_prepared_folder_like_the_midi_folder(prepared: Path, folk_corpus: Path,
                                                               tmp_path: Path) -> None:
    import torch

    from tvae.eval.folder import evaluate_folder
    from tvae.model.checkpoint import save_checkpoint
    from tvae.model.vae import TransformerVAE

    torch.manual_seed(0)
    model = TransformerVAE(TINY_MODEL)
    ckpt = save_checkpoint(tmp_path / "tiny", model)
    from_folder = evaluate_folder(folk_corpus, ckpt, bars=4, progress=False)
    from_prepared = evaluate_folder(prepared, ckpt, bars=4, progress=False)
    assert from_prepared["split"] == "test" and from_prepared["windows"] > 0
    for key in ("tf_accuracy", "free_accuracy", "kl_bits_per_bar", "windows", "bars"):
        assert from_prepared[key] == from_folder[key], key


def test_file_names_that_are_not_utf8(tmp_path: Path) -> None:
    """A folder with a file whose name is not UTF-8 trains and prepares like any other; the
    CSVs keep the name's own bytes."""
    import os
    import shutil

    from tvae.config import DataConfig, TrainConfig
    from tvae.training.run import train

    data = DATA
    folder = tmp_path / "songs"
    folder.mkdir()
    odd = os.fsdecode(b"m\xffa.mid")
    shutil.copy(data / "mary.mid", folder / odd)
    for name in ("ode.mid", "jingle.mid", "twinkle.mid"):
        shutil.copy(data / name, folder / name)
    result = CliRunner().invoke(main, ["prepare", str(folder), str(tmp_path / "prep"),
                                       "--workers", "1", "--quiet"])
    assert result.exit_code == 0, result.output
    model = TINY_MODEL
    cfg = TrainConfig(batch_size=2, epochs=1, max_steps=1, eval_windows=2, num_threads=1)
    for source in (folder, tmp_path / "prep"):
        run = tmp_path / f"run-{source.name}"
        train(source, run, model_config=model, data_config=DataConfig(bars=4), train_config=cfg,
              progress=False)
        assert b"m\xffa.mid" in (run / "split.csv").read_bytes()


def _one_error_line(result) -> str:  # noqa: ANN001 (click's Result)
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def test_prepare_to_a_bad_output_path_is_one_line_and_leaves_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    import tvae.data.prepare as prepare

    folder = songs_with_broken_files(tmp_path, one_bar_song=True)
    (tmp_path / "file").write_text("a file")
    for out in (tmp_path / "file", tmp_path / "file" / "under"):
        result = CliRunner().invoke(main, ["prepare", str(folder), str(out), "--quiet"])
        assert "is a file, not a folder" in _one_error_line(result)
    assert (tmp_path / "file").read_text() == "a file"

    def full_disk(self, rows) -> None:  # noqa: ANN001
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(prepare._RowWriter, "append", full_disk)
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["prepare", str(folder), str(out), "--quiet"])
    line = _one_error_line(result)
    assert "No space left on device" in line and "shard-0-of-1" in line
    assert list(out.iterdir()) == [] and not is_prepared(out)  # no shard, no temporary folder


def test_train_writes_the_skipped_files_by_name(tmp_path: Path, torch_one_thread: None,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """A run folder gets skipped.csv (path, reason), from a MIDI folder and from its
    prepared shards alike; a name that is not UTF-8 keeps its bytes."""
    monkeypatch.setenv("TVAE_CACHE_DIR", str(tmp_path / "cache"))
    folder = songs_with_broken_files(tmp_path, one_bar_song=True)
    result = CliRunner().invoke(main, ["prepare", str(folder), str(tmp_path / "prep"),
                                       "--workers", "1", "--quiet"])
    assert result.exit_code == 0, result.output
    model = TINY_MODEL
    cfg = TrainConfig(batch_size=2, epochs=1, max_steps=1, eval_windows=2, num_threads=1)
    expected = {b"path,reason", b"\xff.mid,not a MIDI file (no MThd header)",
                b"empty.mid,file is empty (0 bytes)", b"tiny.mid,shorter than 2 bars"}
    for source in (folder, tmp_path / "prep"):
        run = tmp_path / f"run-{source.name}"
        with pytest.warns(TvaeWarning):
            train(source, run, model_config=model, data_config=DataConfig(bars=4), train_config=cfg,
                  progress=False)
        assert set((run / "skipped.csv").read_bytes().splitlines()) == expected


def test_titles_are_kept_and_take_the_room_of_their_text(tmp_path: Path) -> None:
    titles = ["b", "Été ☃", "x" * 200, "a"]
    for i, title in enumerate(titles):
        notes = tuple(Note(4 * k, 60 + k, 4) for k in range(8))
        write_melody(Melody(notes, title=title), tmp_path / "songs" / f"{i}.mid")
    info = prepare_folder(tmp_path / "songs", tmp_path / "out", progress=False)
    songs, _ = load_prepared([info["folder"]])
    assert songs.titles == titles and songs.song(1).title == "Été ☃"
    size = (Path(info["folder"]) / "titles.npy").stat().st_size
    assert size < 128 + 8 * 5 + 220  # header, offsets, text: not 4 bytes x 200 per title


def test_a_folder_of_midi_files_and_shards_is_refused(tmp_path: Path) -> None:
    """`tvae prepare songs songs` puts a shard beside the MIDI files; training on `songs` then
    read the shard alone, leaving every MIDI file added since silently out. One line instead."""
    from tvae.data.dataset import load_songs

    songs = tmp_path / "songs"
    shutil.copytree(DATA, songs, ignore=shutil.ignore_patterns("*.md", "*.py"))
    prepare_folder(songs, songs, progress=False, workers=1)
    (songs / "later").mkdir()
    shutil.copy(songs / "mary.mid", songs / "later" / "Added.MID")
    with pytest.raises(TvaeError, match="holds both MIDI files and prepared shards") as caught:
        load_songs(songs, progress=False)
    assert caught.value.path == str(songs)
    assert len(load_songs(songs / "shard-0-of-1", progress=False)[0].offsets) > 1
