"""torch-lsp: a language server for PyTorch code."""

__version__ = "0.1.0"
