"""One compression variant on its deployment targets: a command's ``setup`` (the config, its
resolved task and splits, made once per command and passed down), where the dense model comes from
(``sources``), the variant built for each runtime and timed there (``targets``), judged
next to the dense model (``judge``), run end to end with optional fine-tuning (``run``),
and recorded in MLflow (``record``)."""
