"""Pure numpy: tensor statistics, mask selection rules, the pruning schedule (no files or Keras)."""
