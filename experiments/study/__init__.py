"""The study pipeline, kept apart from the per-experiment modules it runs: the prompts and
sampling (``prompts``), the self-checks that gate a run (``checks``), ``reproduce`` (every
experiment on a set of texts, resumable), the replication table and its rules (``replication``,
which computes and imports nothing from the report), the report that renders the tables it is
handed (``report``, ``plugin_report``), ``export`` (the one place joining the two, writing
docs/results) and the command line (``cli``). Dependencies run one way: the study imports the
experiments; an experiment module imports nothing from here but the study's prompts and its
published numbers (``prompts``), so a new experiment never depends on the pipeline that runs it."""
