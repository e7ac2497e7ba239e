"""Where models are watched.

``profile`` describes the data a model was tested on (the reference: quantile bins of every
numeric input, frequencies of every categorical one, null shares), once, at training time;
``drift`` compares a day (or any chunk) of inputs and scores with that reference using Spark
aggregations only, so a day of any size is a few passes over its rows, never a ``toPandas()``.
"""
