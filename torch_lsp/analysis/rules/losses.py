"""Losses fed the wrong kind of input: probabilities where logits belong, and back (TL108)."""

from __future__ import annotations

import ast
from dataclasses import dataclass

from torch_lsp.analysis.facts import Fix, Severity, TextEdit
from torch_lsp.analysis.file_facts import file_facts
from torch_lsp.analysis.modules import Activation, ModuleClass, Output, is_imported_name, module_facts, reaching_value
from torch_lsp.analysis.node_index import nodes
from torch_lsp.analysis.rules import REGISTRY, RuleContext, rule
from torch_lsp.analysis.syntax import target_key
from torch_lsp.analysis.training import Kind


@dataclass(frozen=True)
class LossFamily:
    label: str
    modules: tuple[str, ...]  # loss module classes
    functions: tuple[str, ...]  # functional forms
    wrong: tuple[Activation, ...]  # inputs that are a mistake
    safer_module: str | None = None  # what to switch the module to when the activation goes
    safer_function: str | None = None


_CROSS_ENTROPY = LossFamily("CrossEntropyLoss", ("torch.nn.CrossEntropyLoss",), ("torch.nn.functional.cross_entropy",),
                            (Activation.SOFTMAX, Activation.LOG_SOFTMAX))
_BCE = LossFamily("BCELoss", ("torch.nn.BCELoss",), ("torch.nn.functional.binary_cross_entropy",),
                  (Activation.SIGMOID,), "BCEWithLogitsLoss", "binary_cross_entropy_with_logits")
_NLL = LossFamily("NLLLoss", ("torch.nn.NLLLoss",), ("torch.nn.functional.nll_loss",),
                  (Activation.SOFTMAX, Activation.SIGMOID, Activation.OTHER), "CrossEntropyLoss", "cross_entropy")
_FAMILIES = (_CROSS_ENTROPY, _BCE, _NLL)
_BY_MODULE = {name: family for family in _FAMILIES for name in family.modules}
_BY_FUNCTION = {name: family for family in _FAMILIES for name in family.functions}

_WHY = {
    (_CROSS_ENTROPY, Activation.SOFTMAX): "CrossEntropyLoss applies log_softmax itself: feeding it probabilities "
                                          "squashes the gradients and slows or stalls training; pass the logits",
    (_CROSS_ENTROPY, Activation.LOG_SOFTMAX): "CrossEntropyLoss applies log_softmax itself: the extra log_softmax is "
                                              "redundant; pass the logits (or use NLLLoss)",
    (_BCE, Activation.SIGMOID): "sigmoid followed by BCELoss is numerically unstable (log(0) for confident outputs); "
                                "BCEWithLogitsLoss on the logits computes the same loss safely",
    (_NLL, Activation.SOFTMAX): "NLLLoss expects log-probabilities, not probabilities: use log_softmax",
    (_NLL, Activation.SIGMOID): "NLLLoss expects log-probabilities (log_softmax over classes), not sigmoid outputs",
    (_NLL, Activation.OTHER): "NLLLoss expects log-probabilities but gets raw model outputs: add log_softmax, or use "
                              "CrossEntropyLoss, which includes it",
}


@rule("TL108", "activation-loss-mismatch", Severity.WARNING,
      "A loss gets probabilities where it expects logits, or logits where it expects log-probabilities.",
      fixable=True, scope="statement")
def activation_loss_mismatch(ctx: RuleContext):
    """
    ## What it does
    Follows the input of a classification loss back to the operation that produced it —
    through variables, and into the `forward` of the model when the model is defined in the
    same file (its last operation, also through `nn.Sequential` and `nn.Softmax` layers) — and
    reports:

    - `softmax` / `log_softmax` output fed to `CrossEntropyLoss` / `F.cross_entropy`;
    - `sigmoid` output fed to `BCELoss` / `F.binary_cross_entropy` (use `BCEWithLogitsLoss`);
    - `NLLLoss` / `F.nll_loss` fed anything but `log_softmax` output (raw logits, softmax).

    ## Why is this bad?
    `CrossEntropyLoss` applies `log_softmax` itself; applying softmax first squashes the
    gradients and training stalls at a worse accuracy. sigmoid + `BCELoss` takes `log` of
    values that round to 0 or 1 and produces infinities; `BCEWithLogitsLoss` fuses the two
    stably. `NLLLoss` on raw scores is simply a different (wrong) objective. None of these
    raise an error.

    Softmax used only for metrics or predictions (`probs.argmax(1)`, accuracy, printing) while
    the loss receives the logits is correct and not reported. Models whose `forward` returns
    different things on different paths (e.g. logits in training, probabilities in eval) are
    not reported.

    ## Example
    ```python
    criterion = nn.CrossEntropyLoss()
    loss = criterion(F.softmax(model(x), dim=1), y)
    ```

    ## Use instead
    ```python
    criterion = nn.CrossEntropyLoss()
    loss = criterion(model(x), y)
    ```

    ## Fix
    Removes the activation when it is written in the loss call, or assigned to a variable that
    nothing else reads; for sigmoid + BCELoss it also switches the loss to `BCEWithLogitsLoss`
    (when that loss object is used only there), for softmax + NLLLoss it turns softmax into
    log_softmax, and for NLLLoss on raw outputs it switches to `CrossEntropyLoss`. When the
    activation is applied in the model's `forward` (single `return`), the fix removes it there;
    that fix is offered but not preferred, because every caller of the model then gets logits
    (apply softmax where probabilities are needed). Activation *layers* inside `nn.Sequential`
    are reported without a fix. Suppress with `# torch-lsp: ignore[TL108]`.
    """
    this = REGISTRY["TL108"]
    for call, family, constructor_call in _loss_calls(ctx):
        prediction = call.args[0] if call.args else next((k.value for k in call.keywords if k.arg == "input"), None)
        if prediction is None:
            continue
        owner = _enclosing_module_class(ctx, call)
        output = _prediction_output(ctx, prediction, owner)
        if output is None or output.activation not in family.wrong:
            continue
        why = _WHY[(family, output.activation)]
        in_forward = _is_inside_forward(ctx, output.node)
        related = [(ctx.parsed.span(output.node), "the activation, in the model's forward")] if in_forward else []
        fix = _fix(ctx, call, family, output, constructor_call)
        yield this.finding(ctx.parsed.span(prediction), why, fix, related)


def _loss_calls(ctx: RuleContext):
    """(loss call, its family, the call that built the loss module if any)."""
    parsed = ctx.parsed
    for call in nodes(parsed, ast.Call):
        func = call.func
        if isinstance(func, ast.Call):  # nn.CrossEntropyLoss()(logits, y)
            family = _BY_MODULE.get(parsed.qualified_name(func.func) or "")
            if family is not None:
                yield call, family, func
            continue
        qualified = parsed.qualified_name(func)
        if qualified is None:
            continue
        if qualified in _BY_FUNCTION:
            yield call, _BY_FUNCTION[qualified], None
            continue
        found = ctx.training.classify(func)
        if found and found[0] is Kind.LOSS and found[1] in _BY_MODULE:
            yield call, _BY_MODULE[found[1]], found[2]


def _prediction_output(ctx: RuleContext, prediction: ast.AST, owner: ModuleClass | None) -> Output | None:
    """What produced the loss input: an activation, or a model whose forward ends in one."""
    facts = module_facts(ctx.parsed)
    output = facts.output_of(prediction, owner)
    if output is not None:
        return output
    producer = prediction
    if isinstance(producer, ast.Name):
        producer = reaching_value(ctx.parsed, producer)
    if not isinstance(producer, ast.Call) or not isinstance(producer.func, (ast.Name, ast.Attribute)):
        return None
    outputs = {(o.activation if o else None): o for o in
               (facts.output_of_constructed(c, call) for c, call in _models_called(ctx, producer.func))}
    # Every model this name can hold must agree; an unknown one makes the whole answer unknown.
    return next(iter(outputs.values())) if len(outputs) == 1 else None


def _models_called(ctx: RuleContext, func: ast.Name | ast.Attribute, depth: int = 0) -> list[tuple[str, ast.Call | None]]:
    """(constructor, constructor call) of each model `func` may hold where it is called.

    Scope first: a local assignment, else the argument passed at each call site of the
    enclosing helper (`train(model, ...)`), else a module-level assignment. The file-wide
    binding of the name (training facts) is the last resort."""
    parsed, training = ctx.parsed, ctx.training
    if isinstance(func, ast.Name) and depth < 4:
        value = reaching_value(parsed, func)
        function = parsed.enclosing(func, (ast.FunctionDef, ast.AsyncFunctionDef))
        if value is None and function is not None and func.id in [a.arg for a in function.args.args]:
            found = []
            for source in training.argument_sources(function, func.id):
                found.extend(_models_called(ctx, source, depth + 1) if isinstance(source, (ast.Name, ast.Attribute))
                             else _model_built_by(ctx, source))
            return found
        if value is not None:
            return _model_built_by(ctx, value)
    classified = training.classify(func)
    if classified and classified[0] is Kind.MODEL:
        return [(classified[1], classified[2])]
    return [("", None)]  # unknown


def _model_built_by(ctx: RuleContext, value: ast.AST) -> list[tuple[str, ast.Call | None]]:
    classified = ctx.training.classify(value)
    return [(classified[1], classified[2])] if classified and classified[0] is Kind.MODEL else [("", None)]


def _enclosing_module_class(ctx: RuleContext, node: ast.AST) -> ModuleClass | None:
    cls = ctx.parsed.enclosing(node, ast.ClassDef)
    return module_facts(ctx.parsed).classes.get(cls.name) if cls else None


def _is_inside_forward(ctx: RuleContext, node: ast.AST) -> bool:
    function = ctx.parsed.enclosing(node, (ast.FunctionDef, ast.AsyncFunctionDef))
    return function is not None and function.name == "forward" and ctx.parsed.enclosing(function, ast.ClassDef) is not None


# -- fixes -------------------------------------------------------------------------------------
def _fix(ctx: RuleContext, call: ast.Call, family: LossFamily, output: Output, constructor_call: ast.Call | None):
    edits: list[TextEdit] = []
    if output.activation is Activation.OTHER:
        switch = _switch_loss(ctx, call, family, constructor_call)
        return Fix(f"Use {family.safer_module} (it applies log_softmax itself)", tuple(switch)) if switch else None
    unwrap = _unwrap_activation(ctx, output.node)
    if unwrap is None or not _only_feeds_losses(ctx, output.node):
        return None
    edits.append(unwrap)
    title = "Remove the activation before the loss"
    if family is _NLL and output.activation is Activation.SOFTMAX:
        # The loss is right, the activation is the wrong one: softmax -> log_softmax.
        rename = _rename_activation(ctx, output.node, "softmax", "log_softmax")
        return Fix("Use log_softmax", (rename,)) if rename else None
    if family.safer_module:
        switch = _switch_loss(ctx, call, family, constructor_call)
        if not switch:
            return None
        edits.extend(switch)
        title = f"Remove the {output.activation.value} and use {family.safer_module}"
    if _overlapping(edits):
        return None
    # Removing an activation from forward changes what every caller gets: offer, don't prefer.
    return Fix(title, tuple(edits), preferred=not _is_inside_forward(ctx, output.node))


def _unwrap_activation(ctx: RuleContext, node: ast.AST) -> TextEdit | None:
    """`F.softmax(x, dim=1)` / `x.softmax(1)` / `self.softmax(x)` -> `x`."""
    if not isinstance(node, ast.Call):
        return None
    func = node.func
    qualified = ctx.parsed.qualified_name(func) or ""
    if qualified.rsplit(".", 1)[-1][:1].isupper():
        return None  # a layer constructor (nn.Softmax inside nn.Sequential): not an application
    tensor_method = (isinstance(func, ast.Attribute) and func.attr in ("softmax", "log_softmax", "sigmoid")
                     and not is_imported_name(ctx.parsed, func.value)
                     and not (isinstance(func.value, ast.Name) and func.value.id == "self"))
    if tensor_method:
        inner = func.value  # x.softmax(dim=1)
    else:  # F.softmax(x, dim=1), torch.sigmoid(x), self.softmax(x)
        inner = node.args[0] if node.args else None
    if inner is None or isinstance(inner, ast.Starred):
        return None
    return TextEdit(ctx.parsed.span(node), ctx.parsed.code(inner))


def _rename_activation(ctx: RuleContext, node: ast.AST, old: str, new: str) -> TextEdit | None:
    if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute) or node.func.attr != old:
        return None
    if isinstance(node.func.value, ast.Name) and node.func.value.id == "self":
        return None  # self.softmax is a layer of the model: renaming it would name nothing
    span = ctx.parsed.span(node.func)
    start = type(span.end)(span.end.line, span.end.col - len(old))
    return TextEdit(type(span)(start, span.end), new)


def _switch_loss(ctx: RuleContext, call: ast.Call, family: LossFamily, constructor_call: ast.Call | None) -> list[TextEdit]:
    """Edits that turn the loss into its safer sibling, if the loss is used only here."""
    parsed = ctx.parsed
    if constructor_call is None:  # functional form: F.binary_cross_entropy -> F.binary_cross_entropy_with_logits
        func = call.func
        if not isinstance(func, ast.Attribute) or not family.safer_function:
            return []
        span = parsed.span(func)
        start = type(span.end)(span.end.line, span.end.col - len(func.attr))
        return [TextEdit(type(span)(start, span.end), family.safer_function)]
    if not family.safer_module or not isinstance(constructor_call.func, (ast.Attribute, ast.Name)):
        return []
    if not _constructed_loss_used_once(ctx, call, constructor_call):
        return []
    func = constructor_call.func
    name = func.attr if isinstance(func, ast.Attribute) else func.id
    if name != family.label:  # imported under another name: leave it to the user
        return []
    span = parsed.span(func)
    start = type(span.end)(span.end.line, span.end.col - len(name))
    return [TextEdit(type(span)(start, span.end), family.safer_module)]


def _constructed_loss_used_once(ctx: RuleContext, call: ast.Call, constructor_call: ast.Call) -> bool:
    if call.func is constructor_call:
        return True
    key = target_key(call.func)
    return bool(key) and file_facts(ctx.parsed).call_count(key) == 1


def _only_feeds_losses(ctx: RuleContext, activation: ast.AST) -> bool:
    """The activation's value reaches the loss and nothing else (no metrics read it)."""
    parsed = ctx.parsed
    parent = parsed.parent(activation)
    if isinstance(parent, ast.Return):  # at the end of forward: every caller of the model gets it
        return _model_output_only_feeds_losses(ctx, parent)
    if isinstance(parent, ast.Call):  # written inline in the loss call
        return True
    if isinstance(parent, ast.Assign) and len(parent.targets) == 1 and isinstance(parent.targets[0], ast.Name):
        name = parent.targets[0].id
        scope = parsed.enclosing(parent, (ast.FunctionDef, ast.AsyncFunctionDef)) or parsed.tree
        reads = [n for n in nodes(parsed, ast.Name, scope) if n.id == name and isinstance(n.ctx, ast.Load)]
        return len(reads) == 1
    return False


def _model_output_only_feeds_losses(ctx: RuleContext, returned: ast.Return) -> bool:
    """For an activation at the end of forward: offered only when the forward has one return."""
    function = ctx.parsed.enclosing(returned, (ast.FunctionDef, ast.AsyncFunctionDef))
    returns = list(nodes(ctx.parsed, ast.Return, function)) if function else []
    return len(returns) == 1


def _overlapping(edits: list[TextEdit]) -> bool:
    ordered = sorted(edits, key=lambda e: (e.span.start, e.span.end))
    return any(a.span.end > b.span.start for a, b in zip(ordered, ordered[1:]))
