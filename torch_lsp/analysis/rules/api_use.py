"""Calls that PyTorch accepts but that do not do what the author meant (TL107, TL109, TL112)."""

from __future__ import annotations

import ast

from torch_lsp.analysis.facts import Fix, Position, Severity, Span, TextEdit
from torch_lsp.analysis.file_facts import file_facts
from torch_lsp.analysis.modules import module_facts
from torch_lsp.analysis.node_index import nodes
from torch_lsp.analysis.rules import REGISTRY, RuleContext, rule
from torch_lsp.analysis.rules._edits import delete_between
from torch_lsp.analysis.training import EventKind, Kind

_FUNCTIONS = (ast.FunctionDef, ast.AsyncFunctionDef)


@rule("TL107", "direct-forward-call", Severity.WARNING,
      "A module's .forward() is called directly, which skips its hooks.", fixable=True,
      scope="statement")
def direct_forward_call(ctx: RuleContext):
    """
    ## What it does
    Finds `model.forward(x)` where `model` is an `nn.Module` instance (built from a torch,
    torchvision or local module class, or a submodule assigned in `__init__`).

    ## Why is this bad?
    `Module.__call__` runs forward *and* the module's hooks: forward pre-hooks, forward hooks,
    backward hooks, and what is built on them (torch.compile guards, pruning, spectral/weight
    norm parametrizations, FSDP/DDP bookkeeping, profilers, torchinfo). Calling `.forward`
    directly silently skips all of them.

    `self.forward(...)`, `super().forward(...)`, `SomeClass.forward(self, ...)`,
    `torch.autograd.Function.forward` and objects that are not known to be modules are not
    reported.

    ## Example
    ```python
    model = Net()
    logits = model.forward(images)
    ```

    ## Use instead
    ```python
    model = Net()
    logits = model(images)
    ```

    ## Fix
    Removes `.forward`, so the module itself is called with the same arguments.
    Suppress with `# torch-lsp: ignore[TL107]` on the line.
    """
    this = REGISTRY["TL107"]
    parsed = ctx.parsed
    for call in nodes(parsed, ast.Call):
        func = call.func
        if not (isinstance(func, ast.Attribute) and func.attr == "forward"):
            continue
        if not _is_module_instance(ctx, func.value, call):
            continue
        receiver = parsed.code(func.value)
        fix = Fix(f"Call `{receiver}(...)` instead of `.forward`",
                  (delete_between(parsed.span(func.value).end, parsed.span(func).end),))
        yield this.finding(parsed.span(func), f"`{receiver}.forward(...)` skips the module's hooks; call "
                           f"`{receiver}(...)` instead", fix)


def _is_module_instance(ctx: RuleContext, receiver: ast.AST, at: ast.AST) -> bool:
    if isinstance(receiver, ast.Name) and receiver.id == "self":
        return False
    if isinstance(receiver, ast.Attribute) and isinstance(receiver.value, ast.Name) and receiver.value.id == "self":
        owner = ctx.parsed.enclosing(at, ast.ClassDef)
        described = module_facts(ctx.parsed).classes.get(owner.name) if owner else None
        if described is not None:
            return receiver.attr in described.layers
    if isinstance(receiver, ast.Name) and receiver.id in module_facts(ctx.parsed).class_names:
        return False  # Net.forward(self, x): an explicit unbound call, as in a subclass
    return ctx.training.kind_of(receiver) is Kind.MODEL


# -- TL109 -------------------------------------------------------------------------------------
_GRAD_OFF = ("torch.no_grad", "torch.inference_mode", "torch.autograd.grad_mode.no_grad",
             "torch.autograd.grad_mode.inference_mode", "torch.autograd.no_grad")
_GRAD_ON = ("torch.enable_grad", "torch.autograd.grad_mode.enable_grad", "torch.autograd.enable_grad")


@rule("TL109", "backward-without-grad", Severity.ERROR,
      ".backward() is called where gradient recording is switched off.", scope="statement")
def backward_without_grad(ctx: RuleContext):
    """
    ## What it does
    Finds `.backward()` (and `torch.autograd.backward`) inside a `with torch.no_grad():`,
    `with torch.inference_mode():` or `with torch.set_grad_enabled(False):` block, or in a
    function decorated with `@torch.no_grad()` / `@torch.inference_mode()` — also when the
    call is in a helper function called from there.

    ## Why is this bad?
    No graph is recorded under these contexts, so the loss has no `grad_fn` and `.backward()`
    raises `element 0 of tensors does not require grad` — or, when some other input still
    requires grad, computes gradients of only part of the computation. Usually the training
    step ended up under an evaluation context by an indentation slip or a copied decorator.

    A nested `with torch.enable_grad():` around the backward call (saliency maps,
    adversarial examples computed during evaluation) is fine and not reported.

    ## Example
    ```python
    with torch.no_grad():
        loss = criterion(model(inputs), labels)
        loss.backward()
    ```

    ## Use instead
    ```python
    loss = criterion(model(inputs), labels)
    loss.backward()
    ```

    ## Fix
    No automatic fix: move the training step out of the block, or re-enable gradients with
    `torch.enable_grad()` where they are really needed. Suppress with
    `# torch-lsp: ignore[TL109]`.
    """
    this = REGISTRY["TL109"]
    parsed = ctx.parsed
    reported: set[ast.AST] = set()
    for region, body, context in _grad_free_regions(ctx):
        if not _may_call_backward(ctx, body):
            continue
        for event in ctx.training.events_in(body, stop=region):
            if event.kind is not EventKind.BACKWARD or event.node in reported or _in_step_closure(event):
                continue
            if _regrad(ctx, event.node) or (event.anchor is not event.node and _regrad(ctx, event.anchor, region)):
                continue
            reported.add(event.node)
            where = f" (through {' -> '.join(event.via)})" if event.via else ""
            related = [(parsed.span(context), "gradients are switched off here")]
            if event.via:
                related.append((parsed.span(event.node), "the backward() call"))
            yield this.finding(parsed.span(event.anchor),
                               f"`.backward()` runs under `{parsed.code(context)}`{where}: no graph is recorded there, "
                               f"so there is nothing to differentiate", related=related)


def _in_step_closure(event) -> bool:
    """`optimizer.step(closure)`: optimizers run the closure under `torch.enable_grad()`."""
    anchor = event.anchor
    return (event.anchor is not event.node and isinstance(anchor, ast.Call) and isinstance(anchor.func, ast.Attribute)
            and anchor.func.attr == "step")


def _may_call_backward(ctx: RuleContext, body: list[ast.stmt]) -> bool:
    """Cheap pre-check before following events: a `.backward` or a call of a local helper."""
    helpers = ctx.training.functions
    for statement in body:
        for node in nodes(ctx.parsed, (ast.Attribute, ast.Name), statement):
            if isinstance(node, ast.Attribute) and (node.attr == "backward" or node.attr in helpers):
                return True
            if isinstance(node, ast.Name) and node.id in helpers:
                return True
    return False


def _grad_free_regions(ctx: RuleContext):
    """(region node, its body, the context expression or decorator switching gradients off)."""
    parsed = ctx.parsed
    for node in nodes(parsed, (ast.With, ast.AsyncWith, *_FUNCTIONS)):
        if isinstance(node, (ast.With, ast.AsyncWith)):
            switches = [item.context_expr for item in node.items if _switches_grad(ctx, item.context_expr) is False]
        else:
            switches = [d for d in node.decorator_list if _switches_grad(ctx, d) is False]
        if switches:
            yield node, node.body, switches[0]


def _switches_grad(ctx: RuleContext, expr: ast.AST) -> bool | None:
    """False if `expr` turns gradient recording off, True if on, None if it does neither."""
    call = expr if isinstance(expr, ast.Call) else None
    func = call.func if call else expr
    parsed = ctx.parsed
    mode = _constant_argument(call, 0, "mode") if call else None
    if parsed.resolves_to(func, *_GRAD_OFF):
        if parsed.resolves_to(func, "torch.inference_mode", "torch.autograd.grad_mode.inference_mode") and mode is False:
            return True
        return False
    if parsed.resolves_to(func, *_GRAD_ON):
        return True
    if call is not None and parsed.resolves_to(func, "torch.set_grad_enabled", "torch.autograd.set_grad_enabled"):
        return mode if isinstance(mode, bool) else None
    return None


def _constant_argument(call: ast.Call, index: int, name: str):
    value = call.args[index] if len(call.args) > index else next((k.value for k in call.keywords if k.arg == name), None)
    return value.value if isinstance(value, ast.Constant) else None


def _regrad(ctx: RuleContext, node: ast.AST, stop: ast.AST | None = None) -> bool:
    """True if gradients are switched back on around `node` (before reaching `stop`)."""
    for ancestor in ctx.parsed.ancestors(node):
        if ancestor is stop:
            return False
        if isinstance(ancestor, (ast.With, ast.AsyncWith)):
            if any(_switches_grad(ctx, item.context_expr) is True for item in ancestor.items):
                return True
            if any(_switches_grad(ctx, item.context_expr) is False for item in ancestor.items):
                return False
        if isinstance(ancestor, _FUNCTIONS):
            return any(_switches_grad(ctx, d) is True for d in ancestor.decorator_list)
    return False


# -- TL112 -------------------------------------------------------------------------------------
@rule("TL112", "require-grad-typo", Severity.ERROR,
      "`x.require_grad = ...` sets a new attribute; the flag is `requires_grad`.", fixable=True,
      scope="statement")
def require_grad_typo(ctx: RuleContext):
    """
    ## What it does
    Finds assignments to an attribute named `require_grad` (missing the *s*).

    ## Why is this bad?
    Tensors and modules accept any new attribute, so `param.require_grad = False` raises no
    error and changes nothing: the layer you meant to freeze keeps training (or the tensor you
    meant to optimise gets no gradient).

    Not reported when the file also *reads* `.require_grad` (then it is an attribute of your
    own object), or for `self.require_grad` in a class that is not an `nn.Module`.

    ## Example
    ```python
    for param in model.backbone.parameters():
        param.require_grad = False
    ```

    ## Use instead
    ```python
    for param in model.backbone.parameters():
        param.requires_grad = False
    ```

    ## Fix
    Renames the attribute to `requires_grad`. Suppress with `# torch-lsp: ignore[TL112]`.
    """
    this = REGISTRY["TL112"]
    parsed = ctx.parsed
    typo = "require_grad"
    if file_facts(parsed).require_grad_read():
        return  # read somewhere in the file: an attribute of the user's own
    attributes = [n for n in nodes(parsed, ast.Attribute) if n.attr == typo]
    modules = module_facts(parsed).class_names
    for attribute in attributes:
        if not isinstance(attribute.ctx, ast.Store):
            continue
        owner = parsed.enclosing(attribute, ast.ClassDef)
        if isinstance(attribute.value, ast.Name) and attribute.value.id == "self" and owner and owner.name not in modules:
            continue
        end = parsed.span(attribute).end
        name_span = Span(Position(end.line, end.col - len(typo)), end)
        fix = Fix("Rename to `requires_grad`", (TextEdit(name_span, "requires_grad"),))
        yield this.finding(name_span, "`require_grad` is not a tensor attribute: this assignment does nothing; "
                           "did you mean `requires_grad`?", fix)
