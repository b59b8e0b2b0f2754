"""Benchmarks: each compares Yilian with a real peer in the same run and prints ratios."""
