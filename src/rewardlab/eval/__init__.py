"""Evaluation: pass@k and paired statistics, and plots of training runs and comparisons."""
