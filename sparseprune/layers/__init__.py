"""The layer table (one row per Keras layer class) and the walk that names every saved variable."""
