"""Where models are watched.

``profile`` describes the data a model was tested on (the reference: quantile bins of every
numeric input, frequencies of every categorical one, null shares), once, at training time;
``drift`` compares a day (or any chunk) of inputs and scores with that reference in one pass
over its rows (``day_counts``: each partition counts, only the counts reach the driver), so a
day of any size works; its rows are never collected.
"""
