"""File formats: read (and later write) Keras model files with zipfile + h5py only."""

from sparseprune.formats.model import LayerInfo, TensorInfo
from sparseprune.formats.reader import ModelFile, open_model

__all__ = ["LayerInfo", "ModelFile", "TensorInfo", "open_model"]
