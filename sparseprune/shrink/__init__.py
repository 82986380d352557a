"""shrink: remove dead/unused units on the file (channel graph, shapes, config resize; no Keras)."""
