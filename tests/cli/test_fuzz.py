"""The MIDI reader under random damage (hypothesis, derandomized so CI is stable).

Real MIDI files with random flips, insertions, deletions and truncations either raise a one-line
`TvaeError` naming the file or read as a valid melody; nothing else ever escapes `read_midi`.
And the same melody encoded in the many ways real files differ (running status, note-offs as
note-ons of velocity 0, a conductor track, drums, controllers, sysex, unknown chunks, any ticks per
quarter) always reads back exactly.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from make_broken import chunk, meta, meter, name, note_events, smf, tempo, track
from test_melody import melodies  # the random-melody strategy

from tests.paths import DATA
from tvae.config import GridConfig
from tvae.errors import TvaeError
from tvae.melody import METERS, Melody, Note, bars_to_melody, melody_to_bars, meter_steps
from tvae.midi import MAX_BARS, ReadReport, melody_to_midi_bytes, read_midi
from tvae.midi_report import describe

GRID = GridConfig()
SEED_MELODIES = (  # written by tvae: pickups and every meter
    Melody((Note(0, 67, 4), Note(4, 72, 8), Note(12, 74, 4), Note(16, 76, 6)), (3, 4), 96.0, 4,
           "waltz"),
    Melody((Note(0, 62, 2), Note(2, 66, 4), Note(6, 69, 2), Note(8, 74, 12)), (6, 8), 140.0, 2,
           "jig"),
    Melody((Note(1, 60, 3), Note(4, 64, 4), Note(8, 67, 8)), (2, 4), 72.0, 0, "march"),
)
SEEDS = tuple([p.read_bytes() for p in sorted(DATA.glob("*.mid"))]
              + [melody_to_midi_bytes(m) for m in SEED_MELODIES])
WORD_FIELDS = (8, 10, 12, 18, 20)  # format, track count, division, first track's length (2 halves)
WORDS = (b"\x00\x00", b"\x00\x01", b"\x7f\xff", b"\x80\x00", b"\xff\xff")
HEADER = 22  # bytes of MThd and the first MTrk header: the likeliest places to hurt
FUZZ = settings(max_examples=300, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@st.composite
def damaged(draw: st.DrawFn) -> bytes:
    """A seed file with 1 to 3 random mutations, often aimed at the header fields (not at the
    "MThd" magic, whose damage is refused at once) or at the track data."""
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.sampled_from([1, 1, 2, 3]))):  # one precise hit is the common case
        kind = draw(st.sampled_from(["flip", "flip", "set", "set", "word", "insert", "delete",
                                     "truncate"]))  # flips and sets keep the framing more often
        last = max(len(data) - 1, 0)
        head = min(HEADER, last)
        pos = draw(st.integers(min(4, last), head) | st.integers(head, last) | st.integers(0, last))
        if kind == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set" and data:
            data[pos] = draw(st.sampled_from([0x00, 0x7F, 0x80, 0x90, 0xF0, 0xF7, 0xFF])
                             | st.integers(0, 255))
        elif kind == "word":  # a header field set to an extreme value
            field = draw(st.sampled_from(WORD_FIELDS))
            data[field : field + 2] = draw(st.sampled_from(WORDS))
        elif kind == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "delete":
            del data[pos : pos + draw(st.integers(1, 8))]
        else:
            del data[pos:]
    return bytes(data)


def assert_valid(melody: Melody, report: ReadReport) -> None:
    """What a successful read promises: a monophonic melody on the grid, bounded in length."""
    assert melody.notes and melody.meter in METERS
    bar = meter_steps(melody.meter)
    assert 0 <= melody.pickup < bar
    assert math.isfinite(melody.qpm) and 1.0 <= melody.qpm <= 1000.0
    for note, following in zip(melody.notes, melody.notes[1:], strict=False):
        assert note.duration >= 1 and note.start + note.duration <= following.start
    assert melody.notes[0].start >= 0 and melody.notes[-1].duration >= 1
    assert all(GRID.min_pitch <= n.pitch <= GRID.max_pitch for n in melody.notes)
    assert 1 <= melody.n_bars <= MAX_BARS
    assert melody.notes[0].start + (bar - melody.pickup) % bar < bar  # no leading empty bar
    assert report.n_notes == len(melody.notes)
    assert bars_to_melody(melody_to_bars(melody)) == melody


@FUZZ
@given(data=damaged())
def test_damaged_files_raise_only_tvae_errors(scratch: Path, data: bytes) -> None:
    path = scratch / "damaged.mid"
    path.write_bytes(data)
    try:
        melody, report = read_midi(path)
    except TvaeError as exc:
        assert exc.path == str(path) and exc.reason and "\n" not in str(exc)
        return
    assert_valid(melody, report)
    json.dumps(describe(path))  # what `tvae inspect --json` prints


def test_every_header_field_at_every_extreme(scratch: Path) -> None:
    """Exhaustively: each seed with one header field (format, track count, division, track
    length) set to each extreme value."""
    for i, seed in enumerate(SEEDS):
        for field in WORD_FIELDS:
            for word in WORDS:
                path = scratch / f"seed{i}_at{field}_{word.hex()}.mid"
                path.write_bytes(seed[:field] + word + seed[field + 2 :])
                try:
                    assert_valid(*read_midi(path))
                except TvaeError as exc:
                    assert exc.path == str(path) and exc.reason and "\n" not in str(exc)


def test_damage_gives_both_outcomes(scratch: Path) -> None:
    """The fuzzing reaches both the parser's refusals and damaged files that still read."""
    outcomes = set()

    @settings(FUZZ, max_examples=60)
    @given(data=damaged())
    def probe(data: bytes) -> None:
        path = scratch / "probe.mid"
        path.write_bytes(data)
        try:
            read_midi(path)
            outcomes.add("ok")
        except TvaeError as exc:
            outcomes.add("cannot parse" if "cannot parse" in exc.reason else "other error")

    probe()
    assert outcomes == {"ok", "cannot parse", "other error"}


def encode(melody: Melody, tpq: int, style: dict[str, bool]) -> bytes:
    """`melody` as a MIDI file written by hand, in one of the ways real files differ."""
    step = tpq // 4
    num, den = melody.meter
    conductor = [(0, tempo(round(60_000_000 / melody.qpm)))]
    if melody.pickup:
        g = math.gcd(melody.pickup, 16)
        conductor += [(0, meter(melody.pickup // g, 16 // g)), (melody.pickup * step, meter(num,
                                                                                             den))]
    else:
        conductor.append((0, meter(num, den)))
    notes = [(n.start * step, n.duration * step, n.pitch) for n in melody.notes]
    end = notes[-1][0] + notes[-1][1]
    events = [(0, name(melody.title.encode()))]
    if style["noise"]:  # program, controllers, pitch bend, sysex, text and a marker
        events += [(0, b"\xc0\x49"), (0, b"\xb0\x07\x64"), (step, b"\xe0\x00\x40"),
                   (0, b"\xf0\x05\x7e\x7f\x09\x01\xf7"), (step * 3, meta(0x01, b"hi")),
                   (end, meta(0x06, b"fine")), (end + tpq, b"\xb0\x40\x00")]
    events += note_events(notes, 0, style["off_as_on"])  # after the program change at tick 0
    tracks = [track(events, running_status=style["running_status"])]
    if style["drums"]:  # a busier drum track: never the melody
        hits = [(t * step, step, 36 + t % 3) for t in range(0, 4 * len(notes) + 8, 2)]
        tracks.append(track(note_events(hits, channel=9), running_status=True))
    if style["conductor"]:
        tracks.insert(0, track(conductor))
    else:
        tracks[0] = track(events + conductor, running_status=style["running_status"])
    if style["unknown_chunk"]:
        tracks.insert(0, chunk(b"XFIH", bytes(range(16))))
    return smf(tracks, division=tpq)


STYLES = st.fixed_dictionaries({key: st.booleans() for key in (
    "running_status", "off_as_on", "noise", "drums", "conductor", "unknown_chunk")})


@settings(max_examples=120, deadline=None, derandomize=True, database=None)
@given(melody=melodies(), tpq=st.sampled_from([4, 24, 96, 480, 960, 32764]), style=STYLES)
def test_equivalent_encodings_read_back_exactly(scratch: Path, melody: Melody, tpq: int,
                                                style: dict[str, bool]) -> None:
    path = scratch / "encoded.mid"
    path.write_bytes(encode(melody, tpq, style))
    back, report = read_midi(path)
    assert back == melody
    assert report.changes == {} and report.pickup == melody.pickup


def test_program_change_mid_melody_keeps_every_note(scratch: Path) -> None:
    melody = SEED_MELODIES[2]
    step = 480 // 4
    notes = [(n.start * step, n.duration * step, n.pitch) for n in melody.notes]
    change = [(0, name(b"march")), (0, meter(2, 4)), (0, tempo(833333)), (4 * step, b"\xc0\x28")]
    path = scratch / "program_change.mid"
    path.write_bytes(smf([track(change + note_events(notes))]))
    back, report = read_midi(path)
    assert len(back.notes) == len(melody.notes) or report.warnings


# -- checkpoints: any value in any config field ------------------------------------------------
JSON_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-2**70, 2**70), st.sampled_from([0, 1, -1, 10**9]),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8),
    st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=3), st.integers(),
                                                         max_size=2))
SECTIONS = ("grid", "model", "data", "train")


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch

    from tvae.config import DataConfig, ModelConfig, TrainConfig
    from tvae.model.checkpoint import save_checkpoint
    from tvae.model.vae import TransformerVAE

    torch.manual_seed(0)
    model = TransformerVAE(ModelConfig(d_model=16, d_latent=4, n_heads=2, d_ff=16, bar_hidden=16,
                                       enc_layers=1, dec_layers=1, trained_bars=4))
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny", model, data=DataConfig(),
                           train=TrainConfig())


@settings(max_examples=150, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(edits=st.lists(st.tuples(st.sampled_from(SECTIONS), st.integers(0, 40), JSON_VALUES),
                      min_size=1, max_size=3),
       whole=st.one_of(st.none(), st.tuples(st.sampled_from(SECTIONS), JSON_VALUES)))
def test_any_config_value_loads_or_is_one_tvae_error(tiny_checkpoint: Path, tmp_path: Path,
                                                     edits: list[tuple[str, int, object]],
                                                     whole: tuple[str, object] | None) -> None:
    """Each edit sets one field of a section to a value of any JSON type (or a whole section):
    loading either gives a model whose configs hold valid values, or one TvaeError naming the
    JSON; never another exception."""
    from tvae.model.checkpoint import load_checkpoint

    meta_ = json.loads(tiny_checkpoint.read_text())
    for section, index, value in edits:
        fields = sorted(meta_[section])
        meta_[section][fields[index % len(fields)]] = value
    if whole is not None:
        meta_[whole[0]] = whole[1]
    path = tmp_path / "edited.json"
    path.write_text(json.dumps(meta_))
    path.with_suffix(".safetensors").write_bytes(tiny_checkpoint.with_suffix(".safetensors")
                                                 .read_bytes())
    try:
        model, _, _ = load_checkpoint(path)
    except TvaeError as exc:
        # A bad value names the JSON; a valid config that the weights do not fit (e.g. the whole
        # model section replaced by defaults) names the weights file it was checked against.
        weights = str(path.with_suffix(".safetensors"))
        assert exc.path == str(path) or (exc.path == weights and "do not fit" in exc.reason), exc
        assert "\n" not in str(exc)
        return
    config = model.config
    assert config.d_model == 16 and 0 <= config.dropout < 1 and math.isfinite(config.copy_edit)


@settings(max_examples=150, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(cuts=st.lists(st.tuples(st.integers(0, 400), st.binary(min_size=1, max_size=8)),
                     min_size=1, max_size=4))
def test_damaged_safetensors_headers_raise_only_tvae_errors(tiny_checkpoint: Path,
                                                            tmp_path: Path,
                                                            cuts: list[tuple[int, bytes]]
                                                            ) -> None:
    """Bytes overwritten in the first 400 bytes (header length and JSON header) of the weights:
    a TvaeError naming a file of the pair (or, when the bytes were unchanged, a loaded model);
    never another exception."""
    from tvae.model.checkpoint import load_checkpoint

    raw = bytearray(tiny_checkpoint.with_suffix(".safetensors").read_bytes())
    for at, data in cuts:
        raw[at:at + len(data)] = data
    path = tmp_path / "damaged.json"
    path.write_bytes(tiny_checkpoint.read_bytes())
    path.with_suffix(".safetensors").write_bytes(bytes(raw))
    try:
        load_checkpoint(path)
    except TvaeError as exc:
        assert exc.path in (str(path), str(path.with_suffix(".safetensors")))


@settings(max_examples=60, deadline=None, derandomize=True, database=None)
@given(melody=melodies(), cuts=st.lists(st.integers(0, 400), max_size=12),
       tpq=st.sampled_from([24, 480]))
def test_a_melody_split_into_parts_reads_back_exactly(scratch: Path, melody: Melody,
                                                      cuts: list[int], tpq: int) -> None:
    """A line split at random notes into tracks of one name (as symusic splits
    one at program changes) is merged back, note for note, in one pass."""
    step = tpq // 4
    notes = [(n.start * step, n.duration * step, n.pitch) for n in melody.notes]
    bounds = sorted({0, len(notes), *(c % (len(notes) + 1) for c in cuts)})
    num, den = melody.meter
    conductor = [(0, meter(num, den)), (0, tempo(round(60_000_000 / melody.qpm)))]
    parts = [track([(0, name(b"line"))] + note_events(notes[lo:hi]))
             for lo, hi in zip(bounds, bounds[1:], strict=False) if hi > lo]
    path = scratch / "parts.mid"
    path.write_bytes(smf([track(conductor)] + parts, division=tpq))
    back, report = read_midi(path)
    assert back.notes == melody.notes
    assert report.changes.get("merged_parts", 0) == len(parts) - 1


# -- the issue-20 cases, at random ----------------------------------------------------------------
@settings(max_examples=200, deadline=None, derandomize=True, database=None)
@given(name=st.text(max_size=12))
def test_any_device_name_is_taken_or_one_tvae_error(name: str) -> None:
    import torch

    from tvae.devices import pick_device

    try:
        assert isinstance(pick_device(name), torch.device)
    except TvaeError as exc:
        assert "--device" in str(exc) and "\n" not in str(exc)


@settings(max_examples=200, deadline=None, derandomize=True, database=None)
@given(values=st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32), min_size=1,
                       max_size=24))
def test_any_latent_values_are_decodable_or_refused_naming_them(values: list[float]) -> None:
    import numpy as np

    from tvae.latents import MAX_LATENT, check_latent_values

    z = np.asarray(values, np.float32).reshape(-1, 1)
    fine = bool(np.isfinite(z).all() and np.abs(z).max() <= MAX_LATENT)
    try:
        check_latent_values(z, "z.npy")
        assert fine
    except TvaeError as exc:
        assert not fine and str(exc).startswith("z.npy: ")


@settings(max_examples=200, deadline=None, derandomize=True, database=None)
@given(raw=st.binary(min_size=1, max_size=40))
def test_any_file_name_bytes_become_printable_text(raw: bytes) -> None:
    import os

    from tvae.files import readable

    text = readable(os.fsdecode(raw))
    text.encode("utf-8")  # never fails: no lone surrogates left
    assert readable(text) == text
