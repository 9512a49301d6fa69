"""basealign: align base causal LMs directly with offline preference optimization."""

__version__ = "0.1.0"
