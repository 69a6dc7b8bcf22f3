"""Write the example melodies in data/ from the note lists below.

Each tune is a list of bars; each bar a list of (pitch, duration) pairs, with pitch a MIDI number
(None for a rest) and duration in sixteenth notes. All tunes are traditional or long in the public
domain, in C major around C4-C5 (MIDI 60-72), 4/4 at 120 quarter notes per minute. The note lists
were transcribed by the tvae authors.

Run:  python data/make_examples.py
"""

from __future__ import annotations

from pathlib import Path

from tvae.melody import Melody, Note
from tvae.midi import write_melody

C4, D4, E4, F4, G4, A4, B4, C5 = 60, 62, 64, 65, 67, 69, 71, 72
Bar = list[tuple[int | None, int]]

MARY: list[Bar] = [
    [(E4, 4), (D4, 4), (C4, 4), (D4, 4)],
    [(E4, 4), (E4, 4), (E4, 8)],
    [(D4, 4), (D4, 4), (D4, 8)],
    [(E4, 4), (G4, 4), (G4, 8)],
    [(E4, 4), (D4, 4), (C4, 4), (D4, 4)],
    [(E4, 4), (E4, 4), (E4, 4), (E4, 4)],
    [(D4, 4), (D4, 4), (E4, 4), (D4, 4)],
    [(C4, 16)],
]

# The chorus's first eight bars ("Jingle bells ... one-horse open sleigh").
JINGLE: list[Bar] = [
    [(E4, 4), (E4, 4), (E4, 8)],
    [(E4, 4), (E4, 4), (E4, 8)],
    [(E4, 4), (G4, 4), (C4, 6), (D4, 2)],
    [(E4, 16)],
    [(F4, 4), (F4, 4), (F4, 6), (F4, 2)],
    [(F4, 4), (E4, 4), (E4, 4), (E4, 2), (E4, 2)],
    [(E4, 4), (D4, 4), (D4, 4), (E4, 4)],
    [(D4, 8), (G4, 8)],
]

_TWINKLE_A: list[Bar] = [
    [(C4, 4), (C4, 4), (G4, 4), (G4, 4)],
    [(A4, 4), (A4, 4), (G4, 8)],
    [(F4, 4), (F4, 4), (E4, 4), (E4, 4)],
    [(D4, 4), (D4, 4), (C4, 8)],
]
_TWINKLE_B: list[Bar] = [
    [(G4, 4), (G4, 4), (F4, 4), (F4, 4)],
    [(E4, 4), (E4, 4), (D4, 8)],
]
# The whole tune, A B B A: twelve bars with exact repeats.
TWINKLE: list[Bar] = _TWINKLE_A + _TWINKLE_B + _TWINKLE_B + _TWINKLE_A

_ODE_OPENING: list[Bar] = [
    [(E4, 4), (E4, 4), (F4, 4), (G4, 4)],
    [(G4, 4), (F4, 4), (E4, 4), (D4, 4)],
    [(C4, 4), (C4, 4), (D4, 4), (E4, 4)],
]
# The first phrase pair: the same opening, a half cadence, then a full cadence.
ODE: list[Bar] = (
    _ODE_OPENING + [[(E4, 6), (D4, 2), (D4, 8)]] + _ODE_OPENING + [[(D4, 6), (C4, 2), (C4, 8)]]
)

TUNES: dict[str, tuple[str, list[Bar]]] = {
    "mary": ("Mary Had a Little Lamb", MARY),
    "jingle": ("Jingle Bells (chorus)", JINGLE),
    "twinkle": ("Twinkle Twinkle Little Star", TWINKLE),
    "ode": ("Ode to Joy", ODE),
}


def bars_to_example(title: str, bars: list[Bar], bar_steps: int = 16) -> Melody:
    """A 4/4 `Melody` from bars of (pitch, duration); checks every bar fills exactly a bar."""
    notes: list[Note] = []
    for index, bar in enumerate(bars):
        length = sum(duration for _, duration in bar)
        if length != bar_steps:
            raise ValueError(f"{title}: bar {index + 1} lasts {length} sixteenths, not {bar_steps}")
        step = index * bar_steps
        for pitch, duration in bar:
            if pitch is not None:
                notes.append(Note(step, pitch, duration))
            step += duration
    return Melody(tuple(notes), meter=(4, 4), qpm=120.0, pickup=0, title=title)


DATA_DIR = Path(__file__).resolve().parent


def main(out_dir: Path = DATA_DIR) -> None:
    """Write every tune in `TUNES` to `out_dir/<name>.mid`."""
    for name, (title, bars) in TUNES.items():
        melody = bars_to_example(title, bars)
        path = out_dir / f"{name}.mid"
        write_melody(melody, path)
        print(f"{path}: {title}, {melody.n_bars} bars, {len(melody.notes)} notes")


if __name__ == "__main__":
    main()
