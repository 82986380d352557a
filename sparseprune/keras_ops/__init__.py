"""The heavy side: operations that need a live Keras model. Imported lazily, only when asked for."""
