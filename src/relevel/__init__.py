"""relevel: graded search-relevance training data made by machine."""
__version__ = "0.1.0"
