"""blspeech: Big-Little Network acoustic models for speech recognition."""

__version__ = "0.1.0"
