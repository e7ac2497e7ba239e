"""The top floor: every job, its entry points and the ``sparkfs`` command.

Every job has the signature ``job(ctx, window)`` and is reachable three ways with the same code:
``sparkfs run <job> ...`` / ``sparkfs backfill <job> ...``, ``spark-submit jobs/<job>.py ...``,
and the wheel entry point ``sparkfs-<job>`` (Databricks ``python_wheel_task``). A daily run is a
window of one day; a backfill is a longer window through the same function. This package is the
only place that knows all jobs (:mod:`.registry`); the library below it never imports it.

- :mod:`.context` -- the common arguments and what every job receives;
- :mod:`.registry` -- job name -> function, and the one error rule;
- :mod:`.entry_points` -- ``spark-submit`` scripts' ``main`` and the wheel's console scripts;
- :mod:`.cli` -- the ``sparkfs`` command;
- one module per job: :mod:`.features`, :mod:`.train`, :mod:`.infer`, :mod:`.smoke`.
"""
