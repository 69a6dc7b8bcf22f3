"""Data: songs from MIDI folders, training windows, prepared shards, the folk corpus."""
