"""The judge's internal representation of an image under corruption."""

from __future__ import annotations

from .base import define, each_corruption, profile_key
from .corruption import embedded_series


@define(
    cells=each_corruption(severity=False, full_series=True),
    requests=embedded_series,
    tolerance=profile_key("embedding_tolerance",
                          why="displacement relative to the spread of clean embeddings (1.0 = as far as a typical "
                              "other image); at severity 1 a corrupted image should stay well inside that"),
    varies="corruption",
)
def embedding_consistency(miqa):
    """Relative embedding displacement stays under the tolerance at severity 1 and grows with severity."""
    miqa.assert_embedding_stable(tolerance=miqa.tolerance)
