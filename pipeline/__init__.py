"""Linking-in-style unit explanations: sample, link, perturb, measure, explain."""

__version__ = "0.1.0"
