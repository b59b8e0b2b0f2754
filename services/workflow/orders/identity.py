"""The resident ID number of an order: the consortium's rule, :mod:`services.core.identity`."""

from ...core.identity import ISSUER, check_digit, key, mask, normalized, problem

__all__ = ["ISSUER", "check_digit", "key", "mask", "normalized", "problem"]
