"""The calibration table and default thresholds in relevance.py are the ones
demo/calibrate_grounding.py fits on the training split (never the evaluation set)."""

from __future__ import annotations

import pytest

pytest.importorskip("sentence_transformers", reason="the fit uses the retrieval embedder")


@pytest.mark.slow
def test_the_stored_calibration_is_the_fitted_one():
    from demo.calibrate_grounding import main

    main(["--check"])  # raises SystemExit when relevance.py is stale
