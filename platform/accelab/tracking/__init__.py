"""Every MLflow read and write: the client and its URIs (``client``), run bookkeeping and
``--resume`` lookup (``runs``), store checks before anything runs (``store_check``), what
the MLflow UI shows (``ui``), MLflow Models (``models``)."""
