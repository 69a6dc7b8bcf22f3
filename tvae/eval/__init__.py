"""Evaluation: what a model does with melodies, measured.

- `structure`: repeats and near-repeats of the data, distance buckets, transfer pairs and the
  follow / spurious / kept / edit-follow counts of a context transfer;
- `windows`: a model on windows: accuracy (teacher-forced, free-running), KL of repeated and new
  bars, per-distance copy metrics, ELBO, transfer metrics, classification;
- `music`: muspy's musical metrics of melodies and their summaries;
- `folder`: `tvae evaluate`, all of it on a MIDI or prepared folder.
"""
