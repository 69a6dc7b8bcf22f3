"""Help texts that quote the bundled model's card (`tvae evaluate --record` stores it in
tvae/weights/default.json), read without importing torch: they stay true when the model
changes, and say nothing of a model without a card."""

from __future__ import annotations

from pathlib import Path


def _card() -> dict:
    """The bundled model's card (`tvae evaluate --record`), read without importing torch; {}
    if it cannot be read. Help texts quote it, so they stay true when the model changes."""
    from tvae.errors import TvaeError
    from tvae.files import read_json

    try:
        card = read_json(Path(__file__).resolve().parents[1] / "weights" / "default.json",
                         "the bundled model's card").get("evaluation")
    except (TvaeError, AttributeError):
        return {}
    return card if isinstance(card, dict) else {}


def _percent(value: object, digits: int = 0) -> str:
    return f"{100 * value:.{digits}f}%" if isinstance(value, (int, float)) else "?"


def transfer_help() -> str:
    text = ("Context transfer: B's latents with A's first bar (or --bars). Bars that the decoder "
            "copies from a transferred bar repeat A's bar, so A's opening is developed in B's "
            "flow; B's other bars keep their own latents. Writes MIDI and a playable page.")
    card = _card()
    if "transfer_follow_rate" not in card:
        return text
    far = ", ".join(f"{_percent((row or {}).get('transfer_follow'))} {name}"
                    for name, row in (card.get("by_distance") or {}).items())
    return (f"{text}\n\nWith the bundled model (its model card, on {card.get('data')}): "
            f"{_percent(card['transfer_follow_rate'])} of B's repeats of its first bar repeat "
            f"A's bar in the output (by bars later: {far}), and "
            f"{_percent(card.get('transfer_spurious_rate'), 1)} of B's other bars become copies "
            "of it.")


def encode_help() -> str:
    text = ("Encode melodies to their per-bar latents: posterior means (bars x Z, saved as .npy) "
            "and, with --sigma, standard deviations; show each bar's KL in bits and which bars "
            "the decoder copies from an earlier bar, with the pointer's weight.")
    card = _card()
    rep, new = card.get("kl_bits_repeated"), card.get("kl_bits_new")
    if not isinstance(rep, (int, float)) or not isinstance(new, (int, float)):
        return text
    return (f"{text} (The bundled model's card, on {card.get('data')}: {rep:.1f} bits for a "
            f"repeated bar, {new:.1f} for a new one.)")
