"""`tvae inspect`: a readable account of how a MIDI file is read (no torch)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tvae.config import HOLD, PAD, REST, GridConfig
from tvae.melody import melody_to_bars
from tvae.midi import MAX_LISTED_TRACKS, list_tracks, read_midi

NOTE_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")


def pitch_name(pitch: int) -> str:
    return f"{NOTE_NAMES[pitch % 12]}{pitch // 12 - 1}"


def class_symbol(cls: int, grid: GridConfig) -> str:
    """A step as text: `.` pad, `_` rest, `-` hold, a pitch name for an onset."""
    if cls == PAD:
        return "."
    if cls == REST:
        return "_"
    if cls == HOLD:
        return "-"
    return pitch_name(grid.class_to_pitch(cls))


def describe(path: str | Path, track: int | None = None,
             grid: GridConfig = GridConfig()) -> dict[str, Any]:
    """Everything `tvae inspect` shows, as a JSON-ready dict."""
    melody, report = read_midi(path, track, grid)
    bars = melody_to_bars(melody, grid)
    pitches = [n.pitch for n in melody.notes]
    return {
        "file": str(path),
        "n_tracks": report.n_tracks,
        "tracks": list_tracks(path),
        "track": report.track,
        "track_name": report.track_name,
        "meter_in_file": report.meter,
        "meter": f"{melody.meter[0]}/{melody.meter[1]}",
        "qpm": melody.qpm,
        "pickup_steps": melody.pickup,
        "bars": bars.n_bars,
        "notes": len(melody.notes),
        "pitch_range": [min(pitches), max(pitches)],
        "pitch_range_names": [pitch_name(min(pitches)), pitch_name(max(pitches))],
        "changes": report.changes,
        "warnings": report.warnings,
        "grid": [[class_symbol(int(c), grid) for c in row] for row in bars.tokens],
    }


def describe_text(info: dict[str, Any]) -> str:
    lines = [
        f"file:        {info['file']}",
        f"track:       {info['track']} of {info['n_tracks']} "
        f"({info['track_name'] or 'unnamed'}; choose another with --track)",
        f"meter:       {info['meter']} (file says {info['meter_in_file']})",
        f"tempo:       {info['qpm']:g} qpm",
        f"pickup:      {info['pickup_steps']} sixteenths",
        f"bars:        {info['bars']}",
        f"notes:       {info['notes']}",
        f"pitch range: {info['pitch_range_names'][0]}-{info['pitch_range_names'][1]}",
    ]
    lines += [f"warning:     {w}" for w in info["warnings"]] or ["warnings:    none"]
    lines.append("tracks (index, notes, polyphony, program, drum, name):")
    for t in info["tracks"]:
        mark = "*" if t["index"] == info["track"] else " "
        lines.append(f" {mark}{t['index']:4d} {t['notes']:6d} {t['polyphony']:6.1%} "
                     f"{t['program']:4d} {'drum' if t['drum'] else '    '} {t['name']}")
    if info["n_tracks"] > len(info["tracks"]):
        lines.append(f"  ... {info['n_tracks'] - len(info['tracks'])} more tracks not listed "
                     f"(at most {MAX_LISTED_TRACKS})")
    lines.append("grid (. pad, _ rest, - hold):")
    for i, row in enumerate(info["grid"]):
        lines.append(f"  {i + 1:4d} | " + " ".join(f"{s:>3}" for s in row))
    return "\n".join(lines)
