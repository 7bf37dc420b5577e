"""The crackscan version, recorded in every run, survey and model file it makes.

Defined here and read by the build (pyproject's dynamic version), so importing crackscan
does not pay for importlib.metadata (~40 ms of every command's start-up)."""

__version__ = "0.2.0"
