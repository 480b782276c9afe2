"""Async jobs that survive a czar restart, shared by the TAP (UWS) and MySQL (SUBMIT) front ends:
job metadata in SQLite, results in Parquet, both in the czar's state directory
(:class:`~czar.jobs.store.JobDB`), and a small periodic reaper (:class:`~czar.jobs.reaper.Reaper`)."""
from czar.jobs.reaper import Reaper
from czar.jobs.store import INTERRUPTED, JobDB, JobRow, default_state_dir

__all__ = ["INTERRUPTED", "JobDB", "JobRow", "Reaper", "default_state_dir"]
