"""The core every room shares: settings, the session, the lakehouse, the one MERGE writer, run
records, input checks and errors. It imports nothing from the rooms above it."""
