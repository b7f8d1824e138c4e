"""The benchmark behind ``bench/run.sh``: servers, wrk runs, scenarios and the report.

Entry: ``bench/run.py`` (``harness.main.main``). Settings are read once, from the environment,
into ``harness.settings.Settings`` there; nothing here reads the environment at import time.
"""
