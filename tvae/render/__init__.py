"""HTML pages for melodies that play offline (imports no torch); see `tvae.render.page`."""

from tvae.render.page import (
    PageMelody,
    copy_assets,
    midi_data_uri,
    render_index,
    render_page,
    write_page,
)

__all__ = [
    "PageMelody",
    "copy_assets",
    "midi_data_uri",
    "render_index",
    "render_page",
    "write_page",
]
