"""Study bundles: a retraining study carried between tracking stores and machines
(bundle.py the format, export.py and importer.py the two directions, studies.py what
each retraining experiment is made of)."""
