"""Evaluation: metrics, evaluators and reports."""
