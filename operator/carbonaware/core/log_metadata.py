"""The intensity log's metadata keys, defined once: the writers (the operator's
``builders.build_log_metadata``, ``accounting.report_metadata``, ``carbonctl run``, the log's
own downsampling) and the reader (``plotting``) name them from here, so a key renamed on one
side cannot silently vanish on the other."""

from __future__ import annotations

from enum import StrEnum


class LogKey(StrEnum):
    # the job
    ZONE = "zone"
    PROVIDER = "provider"
    STRATEGY = "strategy"
    THRESHOLD = "threshold"
    MAX_DELAY = "max_delay"
    EXPECTED_DURATION = "expected_duration"
    JOB = "job"
    CLOCK = "clock"
    # its course
    STATUS = "status"
    DECISION = "decision"
    PLANNED_START = "planned_start"
    UPDATED_AT = "updated_at"
    SUBMITTED_AT = "submitted_at"
    DEADLINE = "deadline"
    STARTED_AT = "started_at"
    COMPLETED_AT = "completed_at"
    # an interruptible job's stretches of running: "start/end;start/end" (an open one has
    # no end yet); the plot shades these, not one run across the pauses
    RUN_SEGMENTS = "run_segments"
    ACCURACY = "accuracy"
    EXIT_CODE = "exit_code"
    # the accounting (accounting.report_metadata)
    ENERGY_KWH = "energy_kwh"
    ENERGY_METHOD = "energy_method"
    ENERGY_DETAIL = "energy_detail"
    EMISSIONS_G = "emissions_g"
    EMISSIONS_METHOD = "emissions_method"
    BASELINE_G = "baseline_g"
    SAVED_G = "saved_g"
    SAVED_PERCENT = "saved_percent"
    SAVINGS_METHOD = "savings_method"
    BASIS = "basis"
    # what the log's downsampling merged (core/intensity_log.py)
    DOWNSAMPLED_BEFORE = "downsampled_before"
    DOWNSAMPLED_TO = "downsampled_to"
