"""Rendering: turn report objects into tables, JSON, CSV, Markdown or plots. Computes nothing."""
