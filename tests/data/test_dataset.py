"""MIDI folder -> cached song arrays -> windows: round trips, splits, cache, augmentation."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from cli_contract import songs_with_broken_files

import tvae.data.prepare as prepare
from tvae.cli.main import main
from tvae.config import HOLD, N_SPECIAL, PAD, REST, DataConfig, GridConfig
from tvae.data.augment import transpose_tokens
from tvae.data.dataset import SongArrays, load_folder
from tvae.data.prepare import is_prepared, load_prepared, prepare_folder
from tvae.data.songs import read_manifest
from tvae.data.windows import Windows
from tvae.errors import TvaeError
from tvae.melody import Melody, Note, bars_to_melody, melody_to_bars, meter_id
from tvae.midi import read_midi, write_melody


def scale_song(n_bars: int, meter: tuple[int, int] = (4, 4), base: int = 60,
               pickup: int = 0) -> Melody:
    """Quarter notes up and down a scale, filling `n_bars` bars after a `pickup`."""
    steps = {(4, 4): 16, (2, 4): 8, (3, 4): 12, (6, 8): 12}[meter]
    total = pickup + n_bars * steps
    notes = [Note(t, base + [0, 2, 4, 5, 7, 5, 4, 2][(t // 4) % 8], 4) for t in range(0, total, 4)]
    return Melody(tuple(notes), meter, 100.0, pickup, f"scale {n_bars}")


@pytest.fixture
def small_folder(tmp_path: Path) -> Path:
    """Two sub-folders of synthetic songs, one song transposed in the other."""
    root = tmp_path / "songs"
    write_melody(scale_song(12), root / "a" / "long.mid")
    write_melody(scale_song(2, (3, 4), pickup=4), root / "a" / "short.mid")
    write_melody(scale_song(9, (6, 8), base=70), root / "b" / "jig.midi")
    write_melody(scale_song(12).transpose(7), root / "b" / "long_up.mid")
    return root


def load(root: Path, tmp_path: Path, **kwargs) -> tuple[SongArrays, dict[str, int]]:
    return load_folder(root, cache_dir=tmp_path / "cache", progress=False, **kwargs)


def test_corpus_songs_round_trip_exactly(folk_corpus: Path, tmp_path: Path) -> None:
    songs, skipped = load(folk_corpus, tmp_path, workers=2)
    assert skipped == {} and songs.n_songs > 20
    assert set(songs.meters.tolist()) == {0, 1, 2, 3} and (songs.pickups > 0).any()
    for i, rel in enumerate(songs.paths):
        melody, _ = read_midi(folk_corpus / rel)
        assert bars_to_melody(songs.song(i)) == melody
        assert bars_to_melody(melody_to_bars(melody)) == melody
        assert songs.meters[i] == meter_id(melody.meter)


def test_manifest_gives_splits_and_labels(folk_corpus: Path, tmp_path: Path) -> None:
    songs, _ = load(folk_corpus / "manifest.csv", tmp_path, label_column="collection")
    rows = read_manifest(folk_corpus / "manifest.csv")
    assert songs.paths == list(rows)
    assert [str(s) for s in songs.splits] == [rows[p]["split"] for p in songs.paths]
    assert songs.labels == [rows[p]["collection"] for p in songs.paths]


def test_cache_hit_equals_fresh_load(small_folder: Path, tmp_path: Path, monkeypatch) -> None:
    fresh, skipped = load(small_folder, tmp_path)

    def no_reading(*args, **kwargs):
        raise AssertionError("the second load must come from the cache")

    monkeypatch.setattr(prepare, "iter_read", no_reading)
    cached, skipped_again = load(small_folder, tmp_path)
    assert skipped_again == skipped
    for name in ("tokens", "offsets", "meters", "pickups", "splits", "qpms"):
        assert np.array_equal(getattr(fresh, name), getattr(cached, name)), name
    assert (fresh.paths, fresh.titles) == (cached.paths, cached.titles)


def test_corrupt_or_stale_cache_is_rebuilt(small_folder: Path, tmp_path: Path) -> None:
    fresh, _ = load(small_folder, tmp_path)
    fresh_tokens = np.array(fresh.tokens)  # read now: the memory-mapped file is overwritten
    (cache_file,) = (tmp_path / "cache").glob("folder-*/shard-0-of-1/tokens.npy")
    cache_file.write_bytes(b"not an npy")
    rebuilt, _ = load(small_folder, tmp_path)
    assert np.array_equal(rebuilt.tokens, fresh_tokens) and rebuilt.paths == fresh.paths
    write_melody(scale_song(5), small_folder / "new.mid")
    grown, _ = load(small_folder, tmp_path)
    assert grown.n_songs == fresh.n_songs + 1 and "new.mid" in grown.paths


def test_broken_files_are_skipped_and_counted(small_folder: Path, tmp_path: Path) -> None:
    (small_folder / "broken.mid").write_bytes(b"RIFF this is not MIDI")
    (small_folder / "empty.mid").write_bytes(b"")
    (small_folder / "notes.txt").write_text("not loaded")
    songs, skipped = load(small_folder, tmp_path, data=DataConfig(min_bars=4))
    assert skipped == {
        "not a MIDI file (no MThd header)": 1,
        "file is empty (0 bytes)": 1,
        "shorter than 4 bars": 1,  # a/short.mid
    }
    assert sorted(songs.paths) == ["a/long.mid", "b/jig.midi", "b/long_up.mid"]


def test_split_by_content_is_deterministic(small_folder: Path, tmp_path: Path) -> None:
    data = DataConfig(valid_fraction=0.4, test_fraction=0.4)
    songs, _ = load(small_folder, tmp_path, data=data, label_column="folder")
    again, _ = load_folder(small_folder, data=data, cache_dir=tmp_path / "other", progress=False)
    assert np.array_equal(songs.splits, again.splits)
    split = dict(zip(songs.paths, songs.splits, strict=True))
    assert split["a/long.mid"] == split["b/long_up.mid"]  # same tune, transposed
    assert songs.labels == [p.split("/")[0] for p in songs.paths]


def test_subset_keeps_songs_intact(small_folder: Path, tmp_path: Path) -> None:
    songs, _ = load(small_folder, tmp_path)
    mask = np.array([i % 2 == 1 for i in range(songs.n_songs)])
    sub = songs.subset(mask)
    assert sub.paths == [p for p, m in zip(songs.paths, mask, strict=True) if m]
    for j, i in enumerate(np.flatnonzero(mask)):
        assert sub.song(j) == songs.song(int(i))


def test_windows_shapes_and_padding(small_folder: Path, tmp_path: Path) -> None:
    songs, _ = load(small_folder, tmp_path)
    windows = Windows(songs, None, DataConfig(bars=8, stride=2))
    lengths = songs.lengths
    assert len(windows) == int(np.sum(np.maximum(lengths - 8, 0) // 2 + 1))
    tokens, meters = windows.batch(np.arange(len(windows)))
    assert tokens.shape == (len(windows), 8, 16) and tokens.dtype == np.int64
    assert meters.shape == (len(windows), 8) and meters.dtype == np.int64
    for w in range(len(windows)):
        i, start = int(windows.song[w]), int(windows.start[w])
        song = songs.song(i).tokens
        n = min(8, len(song) - start)
        assert np.array_equal(tokens[w, :n], song[start : start + n])
        assert (tokens[w, n:] == PAD).all() and (meters[w] == songs.meters[i]).all()
    assert windows.song_of(np.arange(len(windows))).tolist() == windows.song.tolist()


def test_transposition_keeps_classes_in_range() -> None:
    grid = GridConfig()
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, N_SPECIAL, (64, 4, 16))  # (B, N, S) specials ...
    onsets = rng.random((64, 4, 16)) < 0.3
    tokens[onsets] = rng.integers(N_SPECIAL, grid.vocab_size, onsets.sum())  # ... and onsets
    tokens[0, 0, 0], tokens[1, 0, 0] = N_SPECIAL, grid.vocab_size - 1  # at the range's ends
    shifted = transpose_tokens(tokens, 5, np.random.default_rng(1), grid)
    assert shifted.min() >= 0 and shifted.max() < grid.vocab_size
    for cls in (PAD, REST, HOLD):
        assert np.array_equal(shifted == cls, tokens == cls)
    shift = shifted - tokens  # one shift per window, within the limit
    for b in range(64):
        assert len(set(shift[b][onsets[b]].tolist())) <= 1 and np.abs(shift[b]).max() <= 5
    assert (shift[0] >= 0).all() and (shift[1] <= 0).all()
    assert len({int(shift[b][onsets[b]][0]) for b in range(2, 64)}) > 5  # really random


def test_batches_of_a_shuffled_order_cover_every_window_once(small_folder: Path,
                                                              tmp_path: Path) -> None:
    songs, _ = load(small_folder, tmp_path)
    windows = Windows(songs, None, DataConfig(bars=4, stride=1, transpose=0, repeat_augment=0))
    expected, _ = windows.batch(np.arange(len(windows)))
    rng = np.random.default_rng(0)
    order = windows.epoch_order(3, rng)  # as the trainer draws an epoch
    got = np.concatenate([windows.batch(order[i : i + 3], rng)[0]
                          for i in range(0, len(order), 3)])
    assert len(got) == len(windows)
    assert sorted(map(bytes, got.astype(np.int8))) == sorted(map(bytes, expected.astype(np.int8)))


def test_missing_folder_and_bad_label_column(tmp_path: Path, folk_corpus: Path) -> None:
    from tvae.errors import TvaeError

    with pytest.raises(TvaeError, match="no such folder"):
        load(tmp_path / "nope", tmp_path)
    with pytest.raises(TvaeError, match="no column 'genre'"):
        load(folk_corpus, tmp_path, label_column="genre")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(TvaeError, match="no MIDI files"):
        load(empty, tmp_path)
    shutil.rmtree(empty)


def test_add_repeats_repeats_one_phrase_of_full_bars_at_every_offset() -> None:
    from tvae.data.augment import PHRASES, add_repeats

    rng = np.random.default_rng(0)
    tokens = rng.integers(3, 40, size=(400, 12, 16))
    tokens[:, 0, :4] = 0  # a pickup: bar 1 is never copied, nor overwritten
    tokens[:50, 6:] = 0  # a 6-bar song: its padding may only be extended from its end
    out = add_repeats(tokens, 0.5, np.random.default_rng(1))
    changed = (out != tokens).any(-1)  # (B, N)
    assert 140 < changed.any(-1).sum() < 260  # about half the windows
    offsets = set()
    for b in np.flatnonzero(changed.any(-1)):
        ks = np.flatnonzero(changed[b])
        assert not changed[b, 0] and ks[-1] - ks[0] < max(PHRASES)  # one phrase, bar 1 kept
        for k in ks:  # each changed bar copies a full bar of the window at one offset
            sources = {k - j for j in range(1, k) if (out[b, k] == out[b, j]).all()}
            assert sources
            offsets |= sources
        if b < 50:  # extended past the song's end only contiguously: no hole of padding
            real = (out[b] != 0).any(-1)
            assert real[: real.sum()].all()
    assert offsets == set(range(1, 11))  # every offset the windows hold, not just short ones
    assert np.array_equal(add_repeats(tokens, 0.0, rng), tokens)


def test_phrases_are_placed_at_every_offset_equally_often_even_at_the_windows_end() -> None:
    """Only a 1-bar phrase fits 32 bars back in a 33-bar window: the offset is drawn before the
    phrase length, so it is met as often as 8 or 16 back (drawing the length first and retrying
    met the last offsets a quarter as often)."""
    from tvae.data.augment import PHRASES, _place_phrase

    rng = np.random.default_rng(0)
    full = np.ones(33, dtype=bool)
    draws = [_place_phrase(full, 33, 33, rng, min_offset=8) for _ in range(6000)]
    counts = np.bincount([offset for _, offset, _ in draws], minlength=33)[8:]  # offsets 8..32
    assert counts.min() > 0.75 * counts.mean() and counts.max() < 1.25 * counts.mean()
    for start, offset, size in draws:  # every phrase fits: sources and targets inside
        assert size in PHRASES and start - offset >= 0 and start + size <= 33
    song = np.zeros(24, dtype=bool)
    song[:16] = True  # a 16-bar song in a 24-bar window: 13 to 15 back are met too
    offsets = np.bincount([_place_phrase(song, 16, 24, rng)[1] for _ in range(4000)],
                          minlength=24)  # a repeat starts by the song's end: at most 16 back
    assert min(offsets[1:17]) > 0.75 * 4000 / 16 and not offsets[17:].any()


def test_add_repeats_edits_keep_the_rhythm_and_move_one_or_two_pitches() -> None:
    from tvae.data.augment import add_repeats

    tokens = np.full((300, 8, 16), 2)  # holds
    tokens[:, :, ::4] = np.random.default_rng(0).integers(10, 40, size=(300, 8, 4))
    out = add_repeats(tokens, 1.0, np.random.default_rng(1), edit_share=1.0)
    edited = 0
    for b in range(len(out)):
        nearest = [min((out[b, k] != out[b, j]).sum() for j in range(k)) for k in range(1, 8)
                   if (out[b, k] != tokens[b, k]).any()]  # changed bars: closest earlier bar
        edited += any(1 <= d <= 2 for d in nearest)
        assert ((out[b] >= 3) == (tokens[b] >= 3)).all()  # onsets stay onsets: same rhythm
    assert edited > 200  # most windows hold a near-repeat: a copy with 1 or 2 moved pitches


def test_extended_short_songs_go_on_without_holes_and_reach_every_offset() -> None:
    from tvae.data.augment import add_repeats

    rng = np.random.default_rng(0)
    tokens = np.full((300, 33, 16), PAD)
    tokens[:, :, ::4] = 2  # holds everywhere, onsets on the beats of the song's bars only
    lengths = rng.integers(3, 12, size=300)  # every song far shorter than the window
    for b, n in enumerate(lengths):
        tokens[b, :n, ::4] = rng.integers(10, 40, size=(n, 4))
        tokens[b, n:] = PAD
    tokens[:, 0, :8] = PAD  # a pickup: never played again
    out = add_repeats(tokens, 0.5, np.random.default_rng(1), extend=True)
    offsets = set()
    for b in range(len(out)):
        real = (out[b] != PAD).any(-1)  # (N,)
        n = int(real.sum())
        assert real.all()  # every song goes on to the window's end
        assert np.array_equal(out[b, 0], tokens[b, 0])  # the pickup stays, played once
        assert not any(np.array_equal(out[b, k], tokens[b, 0]) for k in range(1, n))
        for k in range(1, n):
            offsets |= {k - j for j in range(k) if np.array_equal(out[b, k], out[b, j])}
    assert set(range(1, 32)) <= offsets  # songs of 3-11 bars teach repeats 31 bars back
    # (32 back would copy the pickup)
    plain = add_repeats(tokens, 0.5, np.random.default_rng(1))
    assert max(int((plain[b] != PAD).any(-1).sum()) for b in range(300)) < 24  # not without


def test_whole_window_batches_keep_every_bar_even_when_trimmed(small_folder: Path,
                                                               tmp_path: Path) -> None:
    songs, _ = load(small_folder, tmp_path)
    data = DataConfig(bars=40, stride=1, transpose=0, repeat_augment=0.5, repeat_reach=0.5)
    windows = Windows(songs, None, data)
    rng = np.random.default_rng(0)
    widths = [windows.batch(np.arange(len(windows)), rng, trim=True)[0].shape[1]
              for _ in range(40)]
    longest = int(windows.lengths.max())
    assert longest < 40 and set(widths) == {longest, 40}  # some batches keep the whole window
    off = Windows(songs, None, DataConfig(bars=40, stride=1, transpose=0, repeat_reach=0.0))
    assert {off.batch(np.arange(len(off)), rng, trim=True)[0].shape[1]
            for _ in range(10)} == {longest}


def test_one_cache_is_a_prepared_shard_and_old_caches_are_ignored(small_folder: Path,
                                                                  tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    old = cache / "songs-0123456789abcdef0123.npz"  # a cache of the old format: never read
    old.write_bytes(b"not an npz")
    songs, _ = load(small_folder, tmp_path)
    (shard,) = cache.glob("folder-*/shard-0-of-1")
    assert is_prepared(shard) and isinstance(songs.tokens, np.memmap)  # memory-mapped
    assert sorted(p.name for p in cache.iterdir()) == sorted([shard.parent.name, old.name])
    same, _ = load_prepared([shard])
    assert same.paths == songs.paths and np.array_equal(same.tokens, songs.tokens)
    assert same.titles == songs.titles == ["scale 12", "scale 2", "scale 9", "scale 12"]


def test_short_songs_are_dropped_and_listed_alike_from_folder_and_prepared(
        small_folder: Path, tmp_path: Path) -> None:
    data = DataConfig(min_bars=4)
    from_folder, folder_skipped = load(small_folder, tmp_path, data=data)
    info = prepare_folder(small_folder, tmp_path / "prep", progress=False)
    assert info["songs"] == 4  # prepared data keeps every song: min_bars is chosen on loading
    prepared, prepared_skipped = load_prepared([info["folder"]], data=data)
    assert prepared.paths == from_folder.paths and "a/short.mid" not in prepared.paths
    assert prepared_skipped == folder_skipped == {"shorter than 4 bars": 1}
    assert prepared_skipped.files == folder_skipped.files == [("a/short.mid",
                                                               "shorter than 4 bars")]
    assert set(prepared.splits.tolist()) <= {"train", "valid", "test"}
    assert len(Windows(prepared, None, data)) == len(Windows(from_folder, None, data))


def test_subset_shares_the_memory_mapped_tokens(small_folder: Path, tmp_path: Path) -> None:
    songs, _ = load(small_folder, tmp_path)
    mask = np.array([False, True, False, True])
    sub = songs.subset(mask)
    assert sub.tokens is songs.tokens  # no copy of the file's tokens
    assert sub.subset(np.array([False, True])).song(0) == songs.song(3)
    data = DataConfig(bars=4, stride=1)
    whole, part = Windows(songs, None, data), Windows(sub, None, data)
    chosen = np.flatnonzero(np.isin(whole.song, np.flatnonzero(mask)))
    assert np.array_equal(whole.batch(chosen)[0], part.batch(np.arange(len(part)))[0])


def test_labels_follow_one_rule_for_folder_and_prepared(small_folder: Path,
                                                        tmp_path: Path) -> None:
    info = prepare_folder(small_folder, tmp_path / "prep", progress=False)
    for loader in (lambda c: load(small_folder, tmp_path, label_column=c),
                   lambda c: load_prepared([info["folder"]], label_column=c)):
        songs, _ = loader("folder")
        assert songs.labels == [p.split("/")[0] for p in songs.paths]
        with pytest.raises(TvaeError, match="'genre' needs a manifest.csv"):
            loader("genre")


def test_a_cache_that_cannot_be_written_only_costs_speed(small_folder: Path,
                                                         tmp_path: Path) -> None:
    (tmp_path / "file").write_text("a file where the cache folder would be")
    songs, _ = load_folder(small_folder, cache_dir=tmp_path / "file" / "cache", progress=False)
    cached, _ = load(small_folder, tmp_path)
    assert not isinstance(songs.tokens, np.memmap)  # read into memory
    assert np.array_equal(songs.tokens, cached.tokens) and songs.paths == cached.paths
    assert list(tmp_path.glob("tvae-*")) == []


def test_evaluate_writes_the_skipped_files_by_name(tmp_path: Path, tiny_ckpt: Path) -> None:
    """`tvae evaluate --skipped FILE` lists each skipped file (a name that is not UTF-8
    keeps its bytes) with its reason."""
    from click.testing import CliRunner

    folder = songs_with_broken_files(tmp_path)
    ckpt = tiny_ckpt
    out = tmp_path / "skipped.csv"
    result = CliRunner().invoke(main, ["evaluate", str(folder), "--model", str(ckpt), "--bars",
                                       "4", "--json", "--skipped", str(out)],
                                env={"TVAE_CACHE_DIR": str(tmp_path / "cache")})
    assert result.exit_code == 0, result.output
    lines = out.read_bytes().splitlines()
    assert lines[0] == b"path,reason" and len(lines) == 3
    assert b"\xff.mid,not a MIDI file (no MThd header)" in lines
    assert b"empty.mid,file is empty (0 bytes)" in lines
