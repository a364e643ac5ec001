"""Phase 4, evaluation (stages ``evaluate``, ``report``, ``plots_page`` and ``selfment compare``):
bootstrap intervals and paired comparisons over images (:mod:`.intervals`), result tables, figures and
labelled panels (:mod:`.report`), and the offline ``dvc plots`` page with the PR-curve plots (:mod:`.plots`).
The metrics themselves are in the core (the pseudo-masks are scored with them too)."""
