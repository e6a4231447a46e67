"""The scIB benchmark of a sweep's best trials (scib-metrics), beside baseline embeddings.

``records`` holds what ``summary.json`` keeps of it (no heavy imports), ``baselines`` trains
and embeds the baselines (PCA always; the original inVAE's FinVAE and scVI when installed),
``scib`` runs scib-metrics' ``Benchmarker``, ``publish`` writes the files of a sweep folder.
"""
