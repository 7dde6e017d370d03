"""The judge's internal representation of an image under corruption."""

from miqa_checks import audit, each_corruption
from miqa_checks.properties.corruption import embedded_series


@audit(cells=each_corruption(severity=False, full_series=True), requests=embedded_series,
       tolerance="embedding_tolerance")
def test_embedding_consistency(miqa):
    """Relative embedding displacement stays under 0.5 at severity 1 and grows with severity."""
    miqa.assert_embedding_stable(tolerance=miqa.tolerance)
