"""The web studio (``python -m sampling studio``): generate strips, run fine-tunes, keep a searchable catalogue."""
