"""The folk corpus export: ABC -> Melody (tvae.data.abc_tunes), splits, manifest, resuming."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from tvae.cli.main import main
from tvae.data.abc_tunes import TuneSource, UnusableTuneError, clean_abc, split_abc, tune_to_melody
from tvae.data.corpus import (
    COLLECTIONS,
    MANIFEST_COLUMNS,
    STATE_FILE,
    export_corpus,
    list_tunes,
    melody_hash,
    split_of,
)
from tvae.melody import Melody, Note
from tvae.midi import read_midi


def tune(body: str, meter: str = "2/4", extra: str = "") -> TuneSource:
    text = f"X:1\nT:Test tune\nM:{meter}\nL:1/8\n{extra}K:C\n{body}\n"
    return TuneSource("test", "test.abc", 1, text)


def test_tune_with_pickup_ties_and_grace_notes() -> None:
    melody, repairs = tune_to_melody(tune("G|c2 e-e|{a}g2 fe|d4-|d2 c2|c4|]"))
    assert melody.meter == (2, 4) and melody.pickup == 2 and melody.title == "Test tune"
    assert melody.notes == (
        Note(0, 67, 2), Note(2, 72, 4), Note(6, 76, 4),  # e-e tied: one note
        Note(10, 79, 4), Note(14, 77, 2), Note(16, 76, 2),
        Note(18, 74, 12),  # d4-|d2 tied over the bar line
        Note(30, 72, 4), Note(34, 72, 8),
    )
    assert repairs == {"grace notes dropped": 1}


def test_cut_time_is_four_four_and_tempo_is_read() -> None:
    melody, _ = tune_to_melody(tune("G|c2 e2 g2 e2|d8|c2 e2 g2 e2|c8|]", "C|", "Q:1/2=100\n"))
    assert melody.meter == (4, 4) and melody.qpm == 200.0 and melody.pickup == 2


def test_unfinished_bar_before_a_new_section_is_padded() -> None:
    # The A part ends on a 3-beat bar; the B part starts on a downbeat.
    melody, repairs = tune_to_melody(tune("c2 e2 g2|e2 c4|c4 ||d2 e2 g2|e2 g4|c6|]", "3/4"))
    assert repairs == {"bars padded": 1} and melody.pickup == 0
    assert Note(24, 72, 8) in melody.notes  # the unfinished bar, then a rest
    assert Note(36, 74, 4) in melody.notes  # the B part starts on the downbeat of bar 4


@pytest.mark.parametrize(
    ("body", "meter", "reason"),
    [
        ("(3cde c2|c2 e2|g2 fe|d4|d2 c2|c4|]", "2/4", "tuplets"),
        ("[ce]2 e2|c2 e2|g2 fe|d4|d2 c2|c4|]", "2/4", "chords"),
        ("c2 e|c2 e|g2 f|d3|d2 c|c3|]", "3/8", "unsupported meter"),
        ("c2 e2|c2 e2|g2 fe|d4|d2 c2|c4|]", "none", "no meter"),
        ("c/4d/4e/2 e2|c2 e2|g2 fe|d4|d2 c2|c4|]", "2/4", "off the sixteenth grid"),
        ("c2 e2|c2 e2|g4|]", "2/4", "too short"),
    ],
)
def test_unusable_tunes_are_skipped_with_a_reason(body: str, meter: str, reason: str) -> None:
    with pytest.raises(UnusableTuneError) as info:
        tune_to_melody(tune(body, meter))
    assert info.value.reason == reason


def test_clean_abc_removes_what_music21_misreads_in_the_body_only() -> None:
    text = 'X:1\nH:History\nK:D\n|D2">"dd Hd2 !fermata!cB|\nw:Hey ho\n'
    assert clean_abc(text) == "X:1\nH:History\nK:D\n|D2dd d2 cB|\nw:Hey ho"
    melody, _ = tune_to_melody(tune('c2 "^x"e2|c2 He2|g2 fe|d4|d2 c2|c4|]'))
    assert [n.pitch for n in melody.notes[:4]] == [72, 76, 72, 76]  # no note lost


def test_split_abc_keeps_the_file_header_apart() -> None:
    header, tunes = split_abc("% file\nL:1/8\n\nX:1\nT:a\nK:C\nC|\n\nX:2\nT:b\nK:C\nD|\n")
    assert header == "% file\nL:1/8\n\n"
    assert [t.splitlines()[1] for t in tunes] == ["T:a", "T:b"]


def test_export_order_spreads_over_collections() -> None:
    first = list_tunes()[: len(COLLECTIONS)]
    assert [t.collection for t in first] == list(COLLECTIONS)
    ids = [t.id for t in list_tunes()]
    assert len(ids) == len(set(ids))


def test_melody_hash_ignores_transposition_but_not_rhythm() -> None:
    a = Melody((Note(0, 60, 4), Note(4, 64, 2), Note(8, 67, 4)), (4, 4), 120.0, 0, "a")
    moved = Melody(tuple(Note(n.start, n.pitch + 5, n.duration) for n in a.notes),
                   (4, 4), 90.0, 0, "b")
    other = Melody((Note(0, 60, 4), Note(4, 64, 4), Note(8, 67, 4)), (4, 4), 120.0, 0, "a")
    assert melody_hash(a) == melody_hash(moved) != melody_hash(other)


def test_split_fractions() -> None:
    hashes = [hashlib.sha1(str(i).encode()).hexdigest() for i in range(4000)]
    splits = [split_of(h) for h in hashes]
    assert splits == [split_of(h) for h in hashes]  # deterministic
    share = {s: splits.count(s) / len(splits) for s in ("train", "valid", "test")}
    assert 0.87 < share["train"] < 0.93 and 0.03 < share["valid"] < 0.07
    assert 0.03 < share["test"] < 0.07


def read_manifest(root: Path) -> list[dict[str, str]]:
    with open(root / "manifest.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def test_exported_files_read_back_exactly(folk_corpus: Path) -> None:
    rows = read_manifest(folk_corpus)
    assert rows and tuple(rows[0]) == MANIFEST_COLUMNS
    meters, pickups = set(), 0
    for row in rows:
        melody, report = read_midi(folk_corpus / row["path"])
        assert report.warnings == []
        assert row["split"] == split_of(melody_hash(melody))
        assert row["meter"] == f"{melody.meter[0]}/{melody.meter[1]}"
        assert int(row["bars"]) == melody.n_bars and row["path"].startswith(row["collection"])
        meters.add(melody.meter)
        pickups += melody.pickup > 0
    assert meters == {(4, 4), (2, 4), (3, 4), (6, 8)} and pickups > 0


def test_summary_counts_every_tune(folk_corpus: Path) -> None:
    summary = json.loads((folk_corpus / "summary.json").read_text())
    assert summary["tunes"] == 40
    assert summary["usable"] + sum(summary["skipped_per_reason"].values()) == 40
    assert summary["usable"] == len(read_manifest(folk_corpus))
    assert sum(summary["usable_per_meter"].values()) == summary["usable"]


def test_rerun_resumes_without_redoing_tunes(folk_corpus: Path) -> None:
    state = folk_corpus / STATE_FILE
    lines = state.read_text().count("\n")
    manifest = (folk_corpus / "manifest.csv").read_text()
    result = CliRunner().invoke(main, ["corpus", str(folk_corpus), "--limit", "40"])
    assert result.exit_code == 0, result.output
    assert "usable tunes:" in result.output
    assert state.read_text().count("\n") == lines
    assert (folk_corpus / "manifest.csv").read_text() == manifest


def test_resume_redoes_a_tune_whose_file_is_gone(tmp_path: Path) -> None:
    out = tmp_path / "corpus"
    export_corpus(out, limit=5, workers=1, progress=False)
    rows = read_manifest(out)
    assert rows
    (out / rows[0]["path"]).unlink()
    export_corpus(out, limit=5, workers=1, progress=False)
    assert (out / rows[0]["path"]).is_file() and read_manifest(out) == rows


def test_corpus_without_music21_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from tvae.data.corpus import corpus_root
    from tvae.errors import TvaeError

    monkeypatch.setitem(sys.modules, "music21", None)  # as if it were not installed
    with pytest.raises(TvaeError, match=r'pip install "tvae\[corpus\]"'):
        corpus_root()


def test_a_damaged_state_file_is_read_around_not_crashed_on(tmp_path: Path) -> None:
    """Lines that are torn, edited, nested 200,000 deep or of the wrong types are redone, not a
    traceback; a manifest or state file that is a folder is one line before any work."""
    out = tmp_path / "corpus"
    export_corpus(out, limit=3, workers=1, progress=False)
    rows = read_manifest(out)
    state = out / STATE_FILE
    good = state.read_text().splitlines()
    bad = ['{"id": 1', "[" * 200_000 + "]" * 200_000, '{"id": "x", "collection": "c", '
           '"status": "ok", "path": null}', '{"id": "y", "collection": "c", "status": "ok", '
           '"bars": "many"}', "[1, 2]"]
    state.write_text("\n".join([good[0], *bad, *good[1:]]) + "\n")
    result = CliRunner().invoke(main, ["corpus", str(out), "--limit", "3"])
    assert result.exit_code == 0 and result.exception is None, result.output
    assert read_manifest(out) == rows
    (out / "summary.json").unlink()
    (out / "summary.json").mkdir()
    result = CliRunner().invoke(main, ["corpus", str(out), "--limit", "4"])
    assert result.exit_code == 2 and "summary.json" in result.stderr, result.output
    assert len(result.stderr.splitlines()) == 1 and read_manifest(out) == rows
    (out / "summary.json").rmdir()
    state.unlink()
    state.mkdir()
    result = CliRunner().invoke(main, ["corpus", str(out), "--limit", "3"])
    assert result.exit_code == 2 and STATE_FILE in result.stderr, result.output


def test_a_full_disk_while_exporting_is_one_line_and_keeps_what_was_done(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno
    import io

    out = tmp_path / "corpus"
    export_corpus(out, limit=2, workers=1, progress=False)
    done = (out / STATE_FILE).read_text()
    real_open = Path.open

    def full(self: Path, mode: str = "r", *args: object, **kwargs: object) -> io.IOBase:
        handle = real_open(self, mode, *args, **kwargs)
        if self.name == STATE_FILE and "a" in mode:
            def no_room(text: str) -> int:
                raise OSError(errno.ENOSPC, "No space left on device")
            handle.write = no_room  # type: ignore[method-assign]
        return handle

    monkeypatch.setattr(Path, "open", full)
    result = CliRunner().invoke(main, ["corpus", str(out), "--limit", "4", "--workers", "1"])
    assert result.exit_code == 2 and "No space left" in result.stderr, result.output
    messages = [line for line in result.stderr.splitlines() if line and "%|" not in line]
    assert len(messages) == 1 and messages[0].startswith("error: ")  # beside the progress bar
    assert "Traceback" not in result.stderr
    assert (out / STATE_FILE).read_text() == done  # what was recorded stays
