"""inspect: per-tensor statistics of a model file -> ModelReport (no Keras)."""
