"""export: the Keras-free side of TFLite export (what LiteRT runs sparse); keras_ops converts."""
