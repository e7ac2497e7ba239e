"""Where data enters and becomes features: bronze (landed files, appended as delivered), silver
(typed, validated by Great Expectations, quarantined), gold feature tables (declared in
``conf/feature_tables.yaml``, written by the one MERGE writer), the transformation library
(``functions``: Column -> Column, ``transformations``: DataFrame -> DataFrame) and the pipeline
that runs them for a window of dates."""
