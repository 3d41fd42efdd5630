"""Drying batches for the quality manager: the record of each batch, what its trays lived
through, its metrics, when it will be dry, and its report (docs/batches.md).

One module per job, pure where it can be (the clock and the data passed in):

- ``model``: the records and the series every other module speaks in;
- ``store``: the batches and moisture readings in SQLite (versioned migrations);
- ``series``: a batch's time series read from InfluxDB (gaps kept as gaps);
- ``metrics``: sun-drying and drying hours, rain exposure, response times ... (pure);
- ``estimate``: when the batch reaches its target moisture, as a range (pure);
- ``warnings``: the quality warnings (pure rules; sent through the notifiers);
- ``report``: CSV, JSON, and the one-page PDF/PNG (matplotlib);
- ``service``: the batch operations the CLI and the HTTP API share;
- ``cli``: ``secadero batch start|moisture|end|list|show|report|export``.
"""
