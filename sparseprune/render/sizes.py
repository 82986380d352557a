"""File sizes before and after, said the right way round ("2.50x smaller" / "1.02x larger")."""

from __future__ import annotations


def size_change(before: int, after: int) -> str:
    """'232,367 -> 92,941 bytes (2.50x smaller)'; a larger or equal file is never 'smaller'."""
    text = f"{before:,} -> {after:,} bytes"
    if before <= 0 or after <= 0:
        return text
    if after < before:
        return f"{text} ({before / after:.2f}x smaller)"
    if after > before:
        return f"{text} ({after / before:.2f}x larger, +{after - before:,} bytes)"
    return f"{text} (same size)"
