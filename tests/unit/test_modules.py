"""analysis/modules.py: nn.Module class facts from source, without torch."""

import ast
import textwrap

from torch_lsp.analysis.modules import Activation, module_facts, reaching_value
from torch_lsp.analysis.node_index import nodes
from torch_lsp.analysis.syntax import parse

SOURCE = textwrap.dedent('''
    import torch
    from torch import nn
    import torch.nn.functional as F
    import pytorch_lightning as pl


    class Net(nn.Module):
        def __init__(self, classes=10):
            super().__init__()
            self.conv = nn.Conv2d(3, 6, kernel_size=5)
            self.fc = nn.Linear(6, classes)
            self.head = nn.Sequential(nn.Linear(classes, classes), nn.LogSoftmax(dim=1))
            self.scale = 2.0

        def forward(self, x, mask=None, *, temperature=1.0):
            x = self.fc(self.conv(x))
            return F.softmax(x / temperature, dim=1)


    class WithHead(Net):
        def forward(self, x):
            return self.head(x)


    class Switching(nn.Module):
        def forward(self, x):
            if self.training:
                return x
            return x.sigmoid()


    class Lit(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = Net()

        def forward(self, x):
            out = self.net(x)
            return out


    class Helper(nn.Module):
        def forward(self, x):
            return some_helper(x)


    class NotAModule:
        def forward(self, x):
            return torch.softmax(x, 1)
''')


def facts():
    return module_facts(parse(SOURCE))


def test_module_classes_through_imports_local_bases_and_lightning():
    assert set(facts().classes) == {"Net", "WithHead", "Switching", "Lit", "Helper"}
    assert facts().classes["Lit"].bases == ("pytorch_lightning.LightningModule",)


def test_layers_in_definition_order_with_constructor_and_arguments():
    net = facts().classes["Net"]
    assert list(net.layers) == ["conv", "fc", "head"]  # self.scale is not a layer
    conv = net.layers["conv"]
    assert conv.constructor == "torch.nn.Conv2d"
    assert [ast.unparse(a) for a in conv.args] == ["3", "6"]
    assert ast.unparse(conv.keywords["kernel_size"]) == "5"
    assert facts().classes["Lit"].layers["net"].constructor == "Net"


def test_subclass_inherits_layers_and_forward_signature():
    with_head = facts().classes["WithHead"]
    assert set(with_head.layers) == {"conv", "fc", "head"}
    assert [a.arg for a in facts().classes["Net"].forward_parameters] == ["x", "mask", "temperature"]
    assert [a.arg for a in with_head.forward_parameters] == ["x"]


def test_output_activation_of_forward():
    f = facts()
    assert f.output_of_class("Net").activation is Activation.SOFTMAX
    assert f.output_of_class("WithHead").activation is Activation.LOG_SOFTMAX  # via nn.Sequential
    assert f.output_of_class("Lit").activation is Activation.SOFTMAX  # through a submodule and a variable
    assert f.output_of_class("Switching") is None  # returns disagree: unknown, not guessed
    assert f.output_of_class("Helper") is None  # a helper function: unknown
    assert f.output_of_class("NotAModule") is None


def test_reaching_value_is_the_last_assignment_before_the_use():
    parsed = parse("a = 1\nb = a\na = 2\nc = a\nfor a in range(3):\n    d = a\n")
    uses = [n for n in nodes(parsed, ast.Name) if n.id == "a" and isinstance(n.ctx, ast.Load)]
    assert [ast.unparse(reaching_value(parsed, u)) if reaching_value(parsed, u) else None for u in uses] == \
        ["1", "2", None]  # a loop variable has no single value
