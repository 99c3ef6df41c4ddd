"""Engines schedule the steps of ``pipelines.steps``; ``common`` holds what every engine shares
(preparing the output directory, markers, finalizing), ``local`` runs on this machine's cores."""
