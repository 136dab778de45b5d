"""ColorMamba: a Mamba-based NIR-to-RGB colorization network, with the losses, metrics, data readers,
training and evaluation used to compare loss configurations."""

__version__ = "0.1.0"
