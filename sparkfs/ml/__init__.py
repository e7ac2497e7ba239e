"""Where models are trained and served.

Training (``collect`` -> ``fit`` -> ``evaluation`` -> ``mlflow_log``, driven by ``train``) and
scoring (``score``, ``skew``) are peers: both build their rows through ``assembly`` (the spine
and its point-in-time features) and load the same packaged model (``model``), and neither
imports the other. ``explore`` holds the notebook helpers.
"""
