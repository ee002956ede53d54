"""Sweeps: Ray Tune trials over compression knobs, their summary, frontier plot and live view."""
