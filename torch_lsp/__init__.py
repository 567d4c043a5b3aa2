"""torch-lsp: a language server for PyTorch code."""

__version__ = "0.1.0"


def __getattr__(name: str):
    # `torch_lsp.log` is looked up lazily so `import torch_lsp` stays cheap for the server and CLI.
    if name == "log":
        from torch_lsp.training.api import log

        return log
    raise AttributeError(f"module 'torch_lsp' has no attribute {name!r}")
