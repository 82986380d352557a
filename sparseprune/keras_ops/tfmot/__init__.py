"""The TFMOT bridge: client (parent side, no heavy imports) runs worker in a subprocess."""
