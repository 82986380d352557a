"""strip: unwrap TFMOT PruneLowMagnitude layers (the file rewrite is formats/tfmot_unwrap.py)."""
