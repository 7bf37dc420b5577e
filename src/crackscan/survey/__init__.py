"""Surveys: many photos scanned into one folder, resumable, on this machine or on Ray Data.

A survey folder holds one folder per photo (overlay.jpg, tiles.csv, summary.json, written
by photo.result.PhotoResult.write, summary.json last), ``summary.csv`` over all photos (most cracked
first; photos that could not be scanned at the end, with the reason) and ``survey.json``
(the model and settings). Planning is the same for every engine: which photos, where each
one's results go, and which are already done (a complete result made from the same photo
file with the same model and settings), so an interrupted survey resumes where it stopped.

Engines:

- ``local`` (the default): one process, photo after photo, the model's threads on every core.
- ``ray``: a Ray Data pipeline (pip install 'crackscan[ray]'), on this machine or a cluster.
  The photos to scan are a dataset of jobs; an actor pool, one actor per CPU, each loading
  the model once (LiteRT or ONNX, one thread), reads, tiles, classifies and writes each
  photo's results; the driver streams the outcomes as they come (progress, summary.csv).
  Each photo is one job: its tiles never leave the worker that decoded it, which on two
  cores is cheaper than shipping 19 MB of tiles per 12 MP photo between processes. An actor
  that dies is restarted and its photos retried by Ray; every write is atomic, so a retried
  photo's results simply replace the lost attempt's. It also writes every tile of the survey
  as one Parquet dataset, ``tiles.parquet/`` (a part file per photo), for DuckDB or pandas.
  Photos may be local paths or URIs of any file system pyarrow reads (s3://, gs://, ...).
"""

