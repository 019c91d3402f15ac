"""r1kit: the DeepSeek-R1 training recipe on any Hugging Face causal LM."""

__version__ = "0.1.0"
