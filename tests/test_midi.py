"""MIDI files <-> Melody: exact round trips, every change the reader makes counted and warned,
track choice, and one-line errors naming the file."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import pretty_midi
import pytest
import symusic
from hypothesis import given, settings
from test_melody import melodies  # the random-melody strategy

from tests.paths import DATA
from tvae.errors import TvaeError, TvaeWarning
from tvae.melody import Melody, Note, melody_to_bars
from tvae.midi import melody_to_midi_bytes, read_melody, read_midi, write_melody

TPQ = 480
STEP = TPQ // 4  # ticks per sixteenth

NoteSpec = tuple[int, int, int]  # (start, duration, pitch) in ticks


def track(notes: Sequence[NoteSpec], name: str = "", drum: bool = False) -> symusic.Track:
    out = symusic.Track(name=name, program=0, is_drum=drum)
    for start, duration, pitch in notes:
        out.notes.append(symusic.Note(start, duration, pitch, 80))
    return out


def write_score(path: Path, tracks: Sequence[symusic.Track], sigs: Sequence[tuple] = ((0, 4, 4),),
                tempos: Sequence[tuple] = ((0, 120.0),), tpq: int = TPQ) -> Path:
    """A MIDI file from symusic parts: time signatures (tick, num, den), tempi (tick, qpm)."""
    score = symusic.Score(tpq)
    for tick, num, den in sigs:
        score.time_signatures.append(symusic.TimeSignature(tick, num, den))
    for tick, qpm in tempos:
        score.tempos.append(symusic.Tempo(tick, qpm))
    for part in tracks:
        score.tracks.append(part)
    path.write_bytes(bytes(score.dumps_midi()))
    return path


def steps(*notes: tuple[int, int, int]) -> list[NoteSpec]:
    """(start, duration, pitch) in sixteenths -> ticks."""
    return [(s * STEP, d * STEP, p) for s, d, p in notes]


SCALE = steps(*[(2 * i, 2, 60 + i) for i in range(8)])


def read_quietly(path: Path, **kwargs: object) -> tuple[Melody, object]:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # reading itself warns nothing; read_melody does
        return read_midi(path, **kwargs)  # type: ignore[arg-type]


# -- exact round trips --------------------------------------------------------------------------
@settings(max_examples=120, deadline=None)
@given(melodies())
def test_random_melodies_round_trip_through_midi(tmp_path_factory: pytest.TempPathFactory,
                                                 melody: Melody) -> None:
    path = tmp_path_factory.getbasetemp() / "round_trip.mid"
    write_melody(melody, path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        back = read_melody(path)  # any TvaeWarning would fail the test
    assert back == melody
    assert melody_to_bars(back) == melody_to_bars(melody)
    _, report = read_midi(path)
    assert report.changes == {} and report.warnings == []
    assert report.pickup == melody.pickup and report.n_notes == len(melody.notes)


def test_written_file_is_standard_midi(tmp_path: Path) -> None:
    """An independent reader (pretty_midi) sees the notes, tempo and meter written."""
    melody = Melody((Note(0, 67, 4), Note(4, 72, 8), Note(14, 74, 2)), (3, 4), 90.0, 4, "tune")
    path = tmp_path / "tune.mid"
    write_melody(melody, path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tune.mid"]  # no temporary files left
    midi = pretty_midi.PrettyMIDI(str(path))
    sixteenth = 60.0 / 90.0 / 4
    notes = [(round(n.start / sixteenth), round((n.end - n.start) / sixteenth), n.pitch)
             for n in midi.instruments[0].notes]
    assert notes == [(0, 4, 67), (4, 8, 72), (14, 2, 74)]
    assert midi.instruments[0].name == "tune" and not midi.instruments[0].is_drum
    assert midi.get_tempo_changes()[1][0] == pytest.approx(90.0)
    sigs = [(s.numerator, s.denominator) for s in midi.time_signature_changes]
    assert sigs == [(1, 4), (3, 4)]  # the pickup bar, then the meter
    assert path.read_bytes() == melody_to_midi_bytes(melody)


@pytest.mark.parametrize(("meter", "pickup", "qpm"),
                         [((4, 4), 0, 120.0), ((2, 4), 2, 72.0), ((3, 4), 4, 96.0),
                          ((6, 8), 6, 132.0), ((6, 8), 3, 60.0), ((4, 4), 15, 150.0)])
def test_pickup_tempo_and_meter_are_preserved(tmp_path: Path, meter: tuple[int, int],
                                              pickup: int, qpm: float) -> None:
    melody = Melody((Note(0, 62, 1), Note(1, 64, 20), Note(30, 65, 3)), meter, qpm, pickup, "x")
    write_melody(melody, tmp_path / "x.mid")
    back, report = read_quietly(tmp_path / "x.mid")
    assert back == melody
    assert (report.pickup, report.qpm, report.meter) == (pickup, qpm, f"{meter[0]}/{meter[1]}")
    assert (report.n_tracks, report.track, report.track_name) == (1, 0, "x")


def test_two_two_is_read_as_four_four(tmp_path: Path) -> None:
    path = write_score(tmp_path / "cut.mid", [track(SCALE, "cut time")], sigs=[(0, 2, 2)])
    melody, report = read_quietly(path)
    assert melody.meter == (4, 4) and report.meter == "2/2"
    assert melody.notes == tuple(Note(2 * i, 60 + i, 2) for i in range(8))
    assert melody.title == "cut time"


def test_title_falls_back_to_the_file_name(tmp_path: Path) -> None:
    melody, _ = read_quietly(write_score(tmp_path / "my tune.mid", [track(SCALE)]))
    assert melody.title == "my tune"


# -- changes are counted and warned -------------------------------------------------------------
def test_chord_keeps_the_top_note(tmp_path: Path) -> None:
    chord = steps((0, 4, 60), (0, 4, 67), (0, 4, 64), (4, 4, 62), (8, 4, 59), (8, 4, 55))
    path = write_score(tmp_path / "chords.mid", [track(chord)])
    melody, report = read_midi(path)
    assert melody.notes == (Note(0, 67, 4), Note(4, 62, 4), Note(8, 59, 4))
    assert report.changes == {"skyline": 3}
    with pytest.warns(TvaeWarning, match="dropped 3 lower notes of chords"):
        read_melody(path)


def test_off_grid_onsets_are_quantized(tmp_path: Path) -> None:
    notes = [(0, STEP, 60), (STEP + 25, STEP - 25, 62), (2 * STEP - 10, STEP, 64)]
    path = write_score(tmp_path / "swing.mid", [track(notes)])
    melody, report = read_midi(path)
    assert [(n.start, n.pitch) for n in melody.notes] == [(0, 60), (1, 62), (2, 64)]
    assert report.changes == {"quantized": 2}
    with pytest.warns(TvaeWarning, match="moved 2 off-grid onsets to the nearest sixteenth"):
        read_melody(path)


def test_out_of_range_pitches_move_by_octaves(tmp_path: Path) -> None:
    path = write_score(tmp_path / "low.mid", [track(steps((0, 4, 30), (4, 4, 60), (8, 4, 110)))])
    melody, report = read_midi(path)
    assert [n.pitch for n in melody.notes] == [54, 60, 86]
    assert report.changes == {"octave_moved": 2}
    with pytest.warns(TvaeWarning, match="moved 2 notes by octaves into the range 48-96"):
        read_melody(path)


def test_short_and_overlapping_notes(tmp_path: Path) -> None:
    notes = [(0, 20, 60), (STEP, 3 * STEP, 62), (2 * STEP, STEP, 64)]  # tiny, then overlapping
    melody, report = read_midi(write_score(tmp_path / "legato.mid", [track(notes)]))
    assert melody.notes == (Note(0, 60, 1), Note(1, 62, 1), Note(2, 64, 1))
    assert report.changes == {"lengthened": 1, "overlaps": 1}


def test_leading_empty_bars_are_dropped(tmp_path: Path) -> None:
    path = write_score(tmp_path / "late.mid", [track(steps((37, 3, 60), (40, 4, 62)))])
    melody, report = read_midi(path)
    assert melody.notes == (Note(5, 60, 3), Note(8, 62, 4)) and melody.pickup == 0
    assert report.changes == {"leading_bars": 2}


def test_an_empty_pickup_bar_is_dropped(tmp_path: Path) -> None:
    """A pickup bar of rests: the melody starts at its first full bar (regression: the notes
    were shifted by a whole bar instead of the pickup, to negative steps)."""
    written = Melody((Note(4, 60, 4), Note(8, 62, 4), Note(24, 64, 2)), (4, 4), 120.0, 4, "p")
    write_melody(written, tmp_path / "p.mid")
    melody, report = read_midi(tmp_path / "p.mid")
    assert melody == Melody((Note(0, 60, 4), Note(4, 62, 4), Note(20, 64, 2)), (4, 4), 120.0,
                            0, "p")
    assert report.changes == {"leading_bars": 1} and report.pickup == 0
    later = Melody((Note(20, 60, 4),), (3, 4), 120.0, 4, "q")  # pickup and a whole bar empty
    write_melody(later, tmp_path / "q.mid")
    melody, report = read_midi(tmp_path / "q.mid")
    assert melody.notes == (Note(4, 60, 4),) and melody.pickup == 0
    assert report.changes == {"leading_bars": 2}


def test_meter_and_tempo_changes_are_reported(tmp_path: Path) -> None:
    """The melody keeps the dominant tempo (in force for most of the song), not the first."""
    path = write_score(tmp_path / "changes.mid", [track(SCALE)],
                       sigs=[(0, 3, 4), (12 * STEP, 2, 4)], tempos=[(0, 100.0), (STEP, 80.0)])
    melody, report = read_midi(path)
    assert melody.meter == (3, 4) and melody.qpm == 80.0
    assert report.changes == {"meter_changes": 1, "tempo_changes": 1}
    assert any("dominant 80 qpm" in w for w in report.warnings)
    path = write_score(tmp_path / "late.mid", [track(SCALE)], tempos=[(0, 100.0),
                                                                     (14 * STEP, 80.0)])
    assert read_midi(path)[0].qpm == 100.0  # 80 qpm only for the last note


# -- track choice -------------------------------------------------------------------------------
def test_inspect_lists_every_track(tmp_path: Path) -> None:
    from tvae.midi_report import describe, describe_text

    chords = [(s * STEP, STEP, p) for s in range(4) for p in (48, 52, 55)]  # 12 notes, chords
    tune = steps(*[(i, 1, 72 + i % 5) for i in range(12)])
    drums = [(s * STEP, STEP, 36) for s in range(8)]
    path = write_score(tmp_path / "band.mid", [track(chords, "piano"), track(tune, "voice"),
                                               track(drums, "kit", True)])
    info = describe(path)
    assert info["n_tracks"] == 3 and info["track"] == 1
    assert [(t["index"], t["name"], t["notes"], t["drum"]) for t in info["tracks"]] == [
        (0, "piano", 12, False), (1, "voice", 12, False), (2, "kit", 8, True)]
    assert info["tracks"][0]["polyphony"] == round(8 / 12, 3)  # 2 of 3 notes per chord
    assert info["tracks"][1]["polyphony"] == 0.0
    text = describe_text(info)
    assert " *   1     12" in text and "kit" in text


def test_track_choice_prefers_the_fullest_monophonic_track(tmp_path: Path) -> None:
    chords = [(s * STEP, STEP, p) for s in range(20) for p in (48, 52, 55)]  # 60 notes, chords
    short = steps(*[(i, 1, 70) for i in range(8)])
    long = steps(*[(i, 1, 72 + i % 5) for i in range(12)])
    drums = [(s * STEP, STEP, 36) for s in range(64)]
    path = write_score(tmp_path / "band.mid", [track(chords, "piano"), track(short, "flute"),
                                               track(long, "voice"), track(drums, "kit", True)])
    melody, report = read_quietly(path)
    assert (report.track, report.track_name, report.n_tracks) == (2, "voice", 4)
    assert [n.pitch for n in melody.notes] == [72 + i % 5 for i in range(12)]
    assert read_quietly(path, track=1)[1].track_name == "flute"
    melody, report = read_midi(path, track=0)  # the override may pick a polyphonic track
    assert report.changes == {"skyline": 40} and {n.pitch for n in melody.notes} == {55}
    with pytest.raises(TvaeError, match="--track 9 does not exist") as info:
        read_midi(path, track=9)
    assert info.value.path == str(path)


def test_polyphonic_tracks_are_used_when_no_track_is_monophonic(tmp_path: Path) -> None:
    chords = [(s * STEP, STEP, p) for s in range(4) for p in (60, 64)]
    melody, report = read_midi(write_score(tmp_path / "pad.mid", [track(chords, "pad")]))
    assert report.track == 0 and [n.pitch for n in melody.notes] == [64] * 4


# -- files that cannot be read ------------------------------------------------------------------
def assert_refused(path: Path, words: str) -> None:
    with pytest.raises(TvaeError, match=words) as info:
        read_midi(path)
    assert info.value.path == str(path) and str(info.value).startswith(f"{path}: ")
    assert "\n" not in str(info.value)


def test_unreadable_files_raise_naming_the_file(tmp_path: Path) -> None:
    assert_refused(write_score(tmp_path / "drums.mid", [track(SCALE, "kit", drum=True)]),
                   "only drum tracks")
    assert_refused(write_score(tmp_path / "silent.mid", [track([], "nothing")]), "no notes")
    assert_refused(write_score(tmp_path / "bare.mid", []), "no notes")
    text = tmp_path / "notes.mid"
    text.write_text("this is not a MIDI file\n")
    assert_refused(text, "not a MIDI file")
    empty = tmp_path / "empty.mid"
    empty.write_bytes(b"")
    assert_refused(empty, "empty")
    assert_refused(tmp_path / "missing.mid", "cannot open")
    assert_refused(tmp_path, "not a file")
    raw = melody_to_midi_bytes(Melody(tuple(Note(2 * i, 60, 2) for i in range(16))))
    cut = tmp_path / "cut.mid"
    for length, words in ((10, "truncated"), (40, "cannot parse"), (len(raw) - 3, "cannot parse")):
        cut.write_bytes(raw[:length])
        assert_refused(cut, words)
    assert_refused(write_score(tmp_path / "five.mid", [track(SCALE)], sigs=[(0, 5, 4)]),
                   "unsupported meter 5/4")


def test_smpte_division_is_refused(tmp_path: Path) -> None:
    raw = bytearray(melody_to_midi_bytes(Melody((Note(0, 60, 4),))))
    raw[12:14] = (0xE728).to_bytes(2, "big")  # -25 fps, 40 ticks per frame
    path = tmp_path / "smpte.mid"
    path.write_bytes(bytes(raw))
    assert_refused(path, "SMPTE")


def test_data_examples_read_without_changes() -> None:
    data = DATA
    for name in ("mary", "jingle", "twinkle", "ode"):
        melody, report = read_quietly(data / f"{name}.mid")
        assert report.changes == {} and melody.meter == (4, 4) and len(melody.notes) > 10


def test_written_files_get_the_usual_permissions(tmp_path: Path) -> None:
    import os
    import stat

    from tvae.files import write_bytes_atomic

    old = os.umask(0o022)
    try:
        write_bytes_atomic(b"x", tmp_path / "f.bin")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "f.bin").stat().st_mode) == 0o644


# --- many tracks and times a MIDI reader cannot hold ----------------------------------------------


def _greedy_merge(score: symusic.Score, index: int) -> int:
    """The old merge, as a reference: each same-name part in turn, kept when the
    merged notes stay monophonic (one pass over all merged notes per part: quadratic)."""
    import numpy as np

    from tvae.midi import _is_monophonic, _track_name

    tracks = list(score.tracks)
    arr = tracks[index].notes.numpy()
    merged = 0
    for i, other in enumerate(tracks):
        if i == index or other.is_drum or other.note_num() == 0 or (
                _track_name(other) != _track_name(tracks[index])):
            continue
        extra = other.notes.numpy()
        both = {k: np.concatenate([arr[k], extra[k]]) for k in ("time", "duration", "pitch")}
        start = both["time"].astype(np.int64)
        if _is_monophonic(start, start + both["duration"]):
            arr, merged = both, merged + 1
    return merged


def _many_parts(n: int, overlapping: bool) -> symusic.Score:
    """One melody split into `n` one-note tracks of one name (as symusic splits a line at
    program changes); with `overlapping`, every part's note also sounds over the next two."""
    score = symusic.Score(TPQ)
    score.time_signatures.append(symusic.TimeSignature(0, 4, 4))
    for i in range(n):
        duration = 3 * STEP if overlapping else STEP
        score.tracks.append(track([(i * STEP, duration, 60 + i % 12)], name="line"))
    return score


def _counting_notes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Record how many notes each monophony check of `tvae.midi` looks at."""
    import tvae.midi as midi

    seen: list[int] = []
    check = midi._is_monophonic

    def counted(starts, ends):  # noqa: ANN001, ANN202
        seen.append(len(starts))
        return check(starts, ends)

    monkeypatch.setattr(midi, "_is_monophonic", counted)
    return seen


def test_merging_many_parts_is_linear(monkeypatch: pytest.MonkeyPatch) -> None:
    """5,000 one-note parts of one melody: all merged, as the old greedy merge did, and the
    monophony checks look at a number of notes linear in the notes (12.5 million before)."""
    from tvae.midi import read_score

    score = _many_parts(5000, overlapping=False)
    reference = _greedy_merge(score, 0)
    seen = _counting_notes(monkeypatch)
    melody, report = read_score(score, "parts.mid")
    assert report.track == 0 and report.changes["merged_parts"] == 4999 == reference
    assert [n.start for n in melody.notes] == list(range(5000))
    assert sum(seen) <= 3 * 5000, sum(seen)


def test_overlapping_parts_are_tried_at_most_max_merged_parts(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Parts that overlap each other: tried one by one like the old merge, but at most
    MAX_MERGED_PARTS of them, with a warning naming how many were not tried."""
    from tvae.midi import MAX_MERGED_PARTS, read_score

    score = _many_parts(20, overlapping=True)  # under the cap: exactly the old result
    melody, report = read_score(score, "few.mid")
    assert report.changes.get("merged_parts", 0) == _greedy_merge(score, report.track)
    assert "parts_not_merged" not in report.changes

    score = _many_parts(5000, overlapping=True)
    seen = _counting_notes(monkeypatch)
    melody, report = read_score(score, "many.mid")
    assert report.changes["parts_not_merged"] == 4999 - MAX_MERGED_PARTS
    assert any(f"at most {MAX_MERGED_PARTS}" in w for w in report.warnings)
    assert sum(seen) <= 5 * 5000 + (MAX_MERGED_PARTS + 1) ** 2, sum(seen)


def test_a_note_after_tick_2_31_is_dropped_with_a_warning(tmp_path: Path) -> None:
    """symusic holds times in 32 bits: a note after tick 2^31 - 1 reads back at a negative
    time. It is dropped, and the warning names the file."""
    from make_broken import TPQ as BROKEN_TPQ
    from make_broken import song, tune

    path = tmp_path / "far.mid"
    path.write_bytes(song(tune() + [(2**31 + 100, BROKEN_TPQ, 60)]))
    with pytest.warns(TvaeWarning) as caught:
        melody = read_melody(path)
    assert len(melody.notes) == len(tune())
    messages = [str(w.message) for w in caught]
    assert any(m.startswith(f"{path}: dropped 1 notes after tick 2^31 - 1") for m in messages), (
        messages)
    assert read_midi(path)[1].changes == {"past_max_tick": 1}
