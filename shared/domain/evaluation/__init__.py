"""Evaluating a challenger: held-out answers, degenerate-answer flags, forgetting probes. Pure."""
