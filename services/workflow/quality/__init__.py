"""Image quality grading (影像质控) and peer review of signed reports (docs/quality.md)."""
