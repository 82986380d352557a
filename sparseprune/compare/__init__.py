"""compare: sparsity side by side (no Keras) plus output and metric deltas through keras_ops."""
