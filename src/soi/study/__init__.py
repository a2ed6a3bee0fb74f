"""Run a whole study (runs x seeds -> analysis -> comparisons -> summary) from a :class:`~soi.config.StudyConfig`."""

from soi.study.runner import RESULT_FILE, SUMMARY_FILE, run_study

__all__ = ["RESULT_FILE", "SUMMARY_FILE", "run_study"]
