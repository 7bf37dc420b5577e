"""The installed crackscan version, recorded in every run, survey and model file it makes."""

try:
    from importlib.metadata import version as _package_version

    __version__ = _package_version("crackscan")
except Exception:  # running from a source tree that is not installed
    __version__ = "0.0.0"
