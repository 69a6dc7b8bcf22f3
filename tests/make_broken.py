"""A corpus of broken, hostile and odd MIDI files, and what tvae should do with each.

`make_broken(out_dir)` writes every file and returns {file name: expected outcome}: "error" (the
file is refused: exit code 2 and one line naming it) or "ok" (it is read, maybe with warnings).
`EXPECTED_CHANGES` names the change (a `ReadReport.changes` key) that some "ok" files must report.
Most files are written byte by byte with the small Standard MIDI File writer below, because MIDI
libraries refuse to write them.

    python tests/make_broken.py OUT_DIR
"""

from __future__ import annotations

import random
import sys
from collections.abc import Callable
from pathlib import Path

MARY = Path(__file__).resolve().parent.parent / "data" / "mary.mid"
TPQ = 480  # ticks per quarter note of the files written here
BIG_BYTES = 20 * 2**20  # size of the "20 MB" files
MAX_DELTA = 2**28 - 1  # the largest delta time a 4-byte variable-length quantity holds
# (pitch, quarter notes): the first phrase of "Mary Had a Little Lamb", 4 bars of 4/4.
TUNE = ((64, 1), (62, 1), (60, 1), (62, 1), (64, 1), (64, 1), (64, 2),
        (62, 1), (62, 1), (62, 2), (64, 1), (67, 1), (67, 2))

Note = tuple[int, int, int]  # (start tick, duration in ticks, pitch)
Event = tuple[int, bytes]  # (absolute tick, event bytes without the delta time)

# --- a small Standard MIDI File writer ---------------------------------------------------------


def vlq(value: int) -> bytes:
    """A MIDI variable-length quantity (7 bits a byte, high bit set on all but the last)."""
    out = [value & 0x7F]
    value >>= 7
    while value:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    return bytes(reversed(out))


def meta(kind: int, payload: bytes) -> bytes:
    return bytes([0xFF, kind]) + vlq(len(payload)) + payload


def tempo(mspq: int) -> bytes:
    """A set-tempo meta event: microseconds per quarter note (3 bytes)."""
    return meta(0x51, mspq.to_bytes(3, "big"))


def meter(num: int, den: int) -> bytes:
    return meta(0x58, bytes([num, den.bit_length() - 1, 24, 8]))


def name(text: bytes) -> bytes:
    return meta(0x03, text)


def note_events(notes: list[Note], channel: int = 0, off_as_on: bool = False) -> list[Event]:
    """Note-on/note-off pairs, in tick order. At one tick, the notes ending there end first,
    then notes start, then zero-length notes end. With `off_as_on`, a note ends with a note-on
    of velocity 0 (as many files do)."""
    off = (0x90 if off_as_on else 0x80) | channel
    keyed = []
    for start, dur, pitch in notes:
        keyed.append((start + dur, 0 if dur else 2, bytes([off, pitch, 0])))
        keyed.append((start, 1, bytes([0x90 | channel, pitch, 90])))
    return [(tick, data) for tick, _, data in sorted(keyed, key=lambda e: e[:2])]


def track(events: list[Event], end: bool = True, running_status: bool = False) -> bytes:
    """An MTrk chunk from (absolute tick, event) pairs, in tick order, with end-of-track.
    Gaps longer than a delta time can hold (2^28 - 1) are bridged with empty marker events.
    With `running_status`, a channel event repeating the previous one's status omits it."""
    body, now, status = bytearray(), 0, None
    for tick, data in sorted(events, key=lambda e: e[0]):
        while tick - now > MAX_DELTA:
            body += vlq(MAX_DELTA) + meta(0x06, b"")
            now, status = now + MAX_DELTA, None
        body += vlq(tick - now)
        body += data[1:] if running_status and data[0] == status else data
        status = data[0] if data[0] < 0xF0 else None  # meta and sysex cancel running status
        now = tick
    if end:
        body += b"\x00\xff\x2f\x00"
    return chunk(b"MTrk", bytes(body))


def chunk(tag: bytes, body: bytes) -> bytes:
    return tag + len(body).to_bytes(4, "big") + body


def smf(tracks: list[bytes], division: int = TPQ, fmt: int = 1,
        n_tracks: int | None = None) -> bytes:
    """A whole file: the MThd header (whose track count may lie) followed by `tracks`."""
    count = len(tracks) if n_tracks is None else n_tracks
    header = fmt.to_bytes(2, "big") + count.to_bytes(2, "big") + division.to_bytes(2, "big")
    return chunk(b"MThd", header) + b"".join(tracks)


def tune(tpq: int = TPQ, pitch_shift: int = 0, repeat: int = 1) -> list[Note]:
    """TUNE as notes at `tpq` ticks per quarter, `repeat` times in a row."""
    notes, t = [], 0
    for _ in range(repeat):
        for pitch, quarters in TUNE:
            notes.append((t, quarters * tpq, pitch + pitch_shift))
            t += quarters * tpq
    return notes


def song(notes: list[Note], *, head: list[Event] = (), track_name: bytes = b"tune",
         division: int = TPQ, channel: int = 0, mspq: int | None = 500000) -> bytes:
    """A one-track file: name, 4/4, the tempo (if any), `head` events and `notes`."""
    events = [(0, name(track_name)), (0, meter(4, 4)), *head]
    if mspq is not None:
        events.append((0, tempo(mspq)))
    return smf([track(events + note_events(notes, channel))], division)


# --- the files ---------------------------------------------------------------------------------


def not_midi() -> dict[str, tuple[bytes, str]]:
    rng = random.Random(0)
    riff = b"RIFF" + (len(MARY.read_bytes()) + 12).to_bytes(4, "little") + b"RMIDdata"
    return {
        "not_midi_text.mid": (b"This is not a MIDI file, just some words.\n" * 20, "error"),
        "not_midi_png.mid": (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(200), "error"),
        "not_midi_random.mid": (rng.randbytes(4096), "error"),
        "not_midi_riff.mid": (riff + MARY.read_bytes(), "error"),
        "empty.mid": (b"", "error"),
        "header_cut.mid": (b"MThd\x00\x00\x00\x06\x00", "error"),
        "header_only.mid": (smf([]), "error"),
        "header_only_claims_1_track.mid": (smf([], n_tracks=1), "error"),
    }


def truncated() -> dict[str, tuple[bytes, str]]:
    """data/mary.mid cut at every offset of its first 40 bytes, then at a spread of offsets."""
    data = MARY.read_bytes()
    cuts = list(range(1, 41)) + list(range(41, len(data), max((len(data) - 41) // 24, 1)))
    cuts.append(len(data) - 1)
    return {f"truncated_{n:04d}.mid": (data[:n], "error") for n in sorted(set(cuts))}


def notes_and_tracks() -> dict[str, tuple[bytes, str]]:
    base = tune()
    zero = [(t, 0, p + 12) for t, _, p in base[:3]]
    overlapping = [(t, d + TPQ // 2, p) for t, d, p in base]
    chords = [(t, d, p + k) for t, d, p in base for k in (-12, -5, 0, 4)]
    drum_tracks = [track(note_events(base, channel=9))]
    many = [track([(0, name(f"t{i}".encode()))] + note_events(base[i % 5 : i % 5 + 1]))
            for i in range(999)]
    tail = [(TPQ * 17, TPQ, 60)]
    return {
        "no_notes.mid": (smf([track([(0, meter(4, 4)), (0, tempo(500000))])]), "error"),
        "drums_only.mid": (smf(drum_tracks), "error"),
        "zero_length_notes.mid": (song(base + zero), "ok"),
        "zero_length_only.mid": (song(zero), "error"),
        "overlapping_notes.mid": (song(overlapping), "ok"),
        "chords.mid": (song(chords), "ok"),
        "tracks_1000.mid": (smf(many + [track(note_events(base + tail))]), "ok"),
        "note_off_without_on.mid": (song(base, head=[(10, b"\x80\x30\x00")] * 3), "ok"),
        "note_never_off.mid": (song(base, head=[(0, b"\x90\x24\x50")]), "ok"),
        "pitch_extremes.mid": (song([(0, TPQ, 0), (TPQ, TPQ, 127)] + base[2:]), "ok"),
        "off_grid.mid": (song([(t + 7, d, p) for t, d, p in base]), "ok"),
        "note_at_max_tick.mid": (song(base + [(2**31 - 1, TPQ, 60)]), "error"),
        "lone_note_at_max_tick.mid": (song([(2**31 - 1, TPQ, 60)]), "ok"),
        "far_note_in_range.mid": (song([(2**31 - TPQ * 8, TPQ, 60)]), "ok"),
        # Symusic's ticks are 32-bit; this note comes back at a negative time.
        "note_past_max_tick.mid": (song(base + [(2**31 + 100, TPQ, 60)]), "ok"),
        # One line split into 5,000 one-note tracks of one name (merged linearly).
        "parts_5000.mid": (smf([track([(0, name(b"line"))] + note_events([(i * TPQ // 4, TPQ // 4,
                                                                          60 + i % 12)]))
                                for i in range(5000)]), "ok"),
    }


def timing() -> dict[str, tuple[bytes, str]]:
    base = tune()
    change = [(TPQ * 8, meter(3, 4))]
    tempo_1bpm = meta(0x51, (60_000_000).to_bytes(4, "big"))  # does not fit the 3 bytes
    return {
        "tpq_1.mid": (song(tune(1), division=1), "ok"),
        "tpq_32767.mid": (song(tune(32767), division=32767), "ok"),
        "division_zero.mid": (song(tune(1), division=0), "error"),
        "smpte_division.mid": (song(base, division=0xE728), "error"),  # -25 fps, 40 per frame
        "tempo_slowest.mid": (song(base, mspq=0xFFFFFF), "ok"),  # 3.58 qpm
        "tempo_1bpm.mid": (song(base, head=[(0, tempo_1bpm)], mspq=None), "ok"),
        "tempo_100000bpm.mid": (song(base, mspq=600), "ok"),
        "tempo_zero_mspq.mid": (song(base, mspq=0), "ok"),
        "tempo_change.mid": (song(base, head=[(TPQ * 8, tempo(300000))]), "ok"),
        "meter_change.mid": (song(base, head=change), "ok"),
        "meter_5_4.mid": (song(base, head=[(0, meter(5, 4))]), "error"),
        "meter_7_8.mid": (song(base, head=[(0, meter(7, 8))]), "error"),
        "meter_huge_denominator.mid": (song(base, head=[(0, meta(0x58, b"\x04\xc8\x18\x08"))]),
                                       "error"),
        "meter_1_4_pickup_then_3_4.mid": (
            smf([track([(0, meter(1, 4)), (TPQ, meter(3, 4))] + note_events(base))]), "ok"),
    }


def big_files() -> dict[str, tuple[bytes, str]]:
    """Files of about 20 MB: a huge sysex, a huge text event, millions of notes."""
    head = [(0, name(b"big")), (0, meter(4, 4)), (0, tempo(500000))]
    sysex = b"\xf0" + vlq(BIG_BYTES) + bytes(BIG_BYTES - 1) + b"\xf7"
    text = meta(0x01, b"la" * (BIG_BYTES // 2))
    notes = note_events(tune())
    # Sixteenth notes with running status: delta, pitch, velocity (6 bytes a note).
    body = (b"\x00\x90\x40\x5a" + b"\x78\x40\x00\x00\x40\x5a" * (BIG_BYTES // 6) + b"\x78\x40\x00"
            + b"\x00\xff\x2f\x00")
    # Zero-length notes at tick 0 with running status (6 bytes a note), then the tune.
    spam = b"\x90\x40\x5a" + b"\x00\x40\x00\x00\x40\x5a" * (BIG_BYTES // 6) + b"\x00\x40\x00"
    return {
        "huge_sysex_20mb.mid": (smf([track(head + [(0, sysex)] + notes)]), "ok"),
        "huge_text_20mb.mid": (smf([track(head + [(0, text)] + notes)]), "ok"),
        "many_notes_20mb.mid": (smf([chunk(b"MTrk", body)]), "error"),
        "zero_length_notes_20mb.mid": (smf([track(head + [(0, spam)] + notes)]), "ok"),
        "meta_length_past_end.mid": (smf([chunk(b"MTrk", b"\x00\xff\x01\x8f\xff\xff\x7f" + b"x"
                                                * 32)]), "error"),
    }


def names_and_structure() -> dict[str, tuple[bytes, str]]:
    base = tune()
    good = track([(0, meter(4, 4))] + note_events(base))
    garbage = chunk(b"MTrk", b"\x00\x40\x5a\x00\x3e\x5a\x83\x60\x40\x00" * 8 + b"\x00\xff\x2f\x00")
    return {
        "name_not_utf8.mid": (song(base, track_name=b"\xff\xfe\x00\xc3\x28 bad \xa0\xa1"), "ok"),
        "name_100kb.mid": (song(base, track_name=b"n" * 100_000), "ok"),
        "name_script.mid": (song(base, track_name=b"<script>alert(1)</script>"), "ok"),
        "name_control_chars.mid": (song(base, track_name=b"a\nb\rc\x1b[31mred\x00"), "ok"),
        "claims_65535_tracks.mid": (smf([good], n_tracks=65535), "ok"),
        "claims_2_tracks_has_1.mid": (smf([good], n_tracks=2), "ok"),
        "running_status_garbage.mid": (smf([garbage]), "error"),
        "unknown_chunk.mid": (smf([chunk(b"XFIH", b"\x01\x02\x03" * 10), good]), "ok"),
        "chunk_length_lies.mid": (smf([good[:4] + (2**32 - 1).to_bytes(4, "big") + good[8:]]),
                                  "error"),
        "no_end_of_track.mid": (smf([track([(0, meter(4, 4))] + note_events(base), end=False)]),
                                "ok"),
        "format_2.mid": (smf([good, good], fmt=2), "ok"),
        "melody_on_track_3.mid": (smf([track([(0, meter(4, 4))]), track(note_events(
            [(t, d, p - 24) for t, d, p in base[::2]], channel=1)), track(note_events(
                [(0, TPQ * 16, 36)], channel=9)), track(note_events(base, channel=2))]), "ok"),
    }


GROUPS: tuple[Callable[[], dict[str, tuple[bytes, str]]], ...] = (
    not_midi, truncated, notes_and_tracks, timing, big_files, names_and_structure)

# Changes (ReadReport.changes keys) that these "ok" files must report as warnings.
EXPECTED_CHANGES: dict[str, str] = {
    "zero_length_notes.mid": "zero_length",
    "overlapping_notes.mid": "overlaps",
    "chords.mid": "skyline",
    "pitch_extremes.mid": "octave_moved",
    "off_grid.mid": "quantized",
    "far_note_in_range.mid": "leading_bars",
    "tempo_100000bpm.mid": "tempo",
    "tempo_zero_mspq.mid": "tempo",
    "tempo_change.mid": "tempo_changes",
    "meter_change.mid": "meter_changes",
    "zero_length_notes_20mb.mid": "zero_length",
    "lone_note_at_max_tick.mid": "leading_bars",
    "note_past_max_tick.mid": "past_max_tick",
    "parts_5000.mid": "merged_parts",
}


def make_broken(out_dir: str | Path) -> dict[str, str]:
    """Write the corpus into `out_dir`; returns {file name: "error" or "ok"}."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    expected = {}
    for group in GROUPS:
        for file_name, (data, outcome) in group().items():
            (out / file_name).write_bytes(data)
            expected[file_name] = outcome
    return expected


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python tests/make_broken.py OUT_DIR")
    result = make_broken(sys.argv[1])
    errors = sum(v == "error" for v in result.values())
    print(f"wrote {len(result)} files to {sys.argv[1]}: {errors} to refuse, "
          f"{len(result) - errors} to read")
