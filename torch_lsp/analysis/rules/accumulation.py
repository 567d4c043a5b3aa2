"""Loss tensors summed across iterations with their graphs attached (TL103)."""

from __future__ import annotations

import ast

from torch_lsp.analysis.evaluation_facts import EvaluationFacts
from torch_lsp.analysis.facts import Fix, Severity, TextEdit
from torch_lsp.analysis.file_facts import file_facts
from torch_lsp.analysis.rules import REGISTRY, RuleContext, rule
from torch_lsp.analysis.node_index import inside, nodes
from torch_lsp.analysis.syntax import ParsedModule, target_key
from torch_lsp.analysis.training import EventKind, Kind, Loop, TrainingFacts

# Calls that turn a tensor into a number or a graph-free tensor.
_DETACHING_METHODS = {"item", "detach", "tolist", "numpy"}
_DETACHING_FUNCTIONS = {"float", "int", "round"}
# Methods that keep the autograd graph of their receiver.
_GRAPH_KEEPING_METHODS = {"mean", "sum", "cpu", "cuda", "to", "float", "double", "squeeze", "view", "reshape",
                          "clone", "abs", "sqrt", "exp", "log", "mul", "div", "add"}
_FUNCTIONAL_LOSSES = {"cross_entropy", "binary_cross_entropy", "binary_cross_entropy_with_logits", "kl_div",
                      "nll_loss", "mse_loss", "l1_loss", "smooth_l1_loss", "huber_loss", "ctc_loss"}


@rule("TL103", "loss-accumulated-with-graph", Severity.WARNING,
      "A loss tensor is summed across iterations without .item()/.detach(): every step's graph stays alive.",
      fixable=True, scope="statement")
def loss_accumulated_with_graph(ctx: RuleContext):
    """
    ## What it does
    Finds a running total that adds a loss tensor on every iteration of a loop
    (`total += loss`, `total = total + loss * n`) without `.item()` or `.detach()`, where
    the total lives across iterations (it is initialised before the loop).

    ## Why is this bad?
    A loss tensor carries its autograd graph. Adding it to a running total links the graph of
    every batch into one ever-growing graph: activations of all previous steps stay in memory
    until the total is freed, memory grows each step until the process runs out of it, and
    the total itself is a tensor where a number was meant.

    Not reported: sums that are later back-propagated (an accumulated objective such as
    `total = 0; for head in heads: total += crit(head(x), y)` followed by
    `total.backward()`), sums computed under `torch.no_grad()`, and `.item()`/`.detach()`
    sums.

    ## Example
    ```python
    running_loss = 0.0
    for inputs, labels in loader:
        loss = criterion(model(inputs), labels)
        loss.backward()
        optimizer.step()
        running_loss += loss
    ```

    ## Use instead
    ```python
    running_loss = 0.0
    for inputs, labels in loader:
        loss = criterion(model(inputs), labels)
        loss.backward()
        optimizer.step()
        running_loss += loss.item()
    ```

    ## Fix
    Adds `.item()` to the loss (or `.detach()` when the total is used as a tensor later, e.g.
    `total.item()`, or the loss is not a scalar).

    Suppress with `# torch-lsp: ignore[TL103]` on the accumulating line.
    """
    this = REGISTRY["TL103"]
    facts = ctx.training
    evaluation = EvaluationFacts(facts, ctx.path)
    objectives = _Objectives(ctx.parsed)
    file = file_facts(ctx.parsed)
    for node, total, added in _accumulations(ctx.parsed):
        loop = facts.loop_of(node)
        if loop is None or not _initialised_outside(ctx.parsed, total, node, loop):
            continue
        carrier = _graph_carrier(facts, added, loop, node, 0)
        scope = ctx.parsed.enclosing(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)) or ctx.parsed.tree
        if carrier is None or evaluation.grad_controlled(node) or objectives.backpropagated(scope, total):
            continue
        method = "detach" if file.has_attributes_read(total) or _not_scalar(facts, carrier, loop, node) else "item"
        text = ctx.parsed.code(carrier)
        if not isinstance(carrier, (ast.Name, ast.Attribute, ast.Call, ast.Subscript)):
            text = f"({text})"
        fix = Fix(f"Add `.{method}()`: accumulate the value, not the graph",
                  (TextEdit(ctx.parsed.span(carrier), f"{text}.{method}()"),))
        message = (f"`{total}` adds the loss tensor `{ctx.parsed.code(carrier)}` on every iteration: the autograd "
                   f"graph of every step stays in memory; add `.item()` (or `.detach()`)")
        yield this.finding(ctx.parsed.span(node), message, fix)


def _accumulations(parsed: ParsedModule):
    """(statement, total's name, the added expression) for `t += x` and `t = t + x`."""
    for node in nodes(parsed, (ast.AugAssign, ast.Assign)):
        if isinstance(node, ast.AugAssign) and isinstance(node.op, ast.Add) and isinstance(node.target, ast.Name):
            yield node, node.target.id, node.value
        elif isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name) and (
            isinstance(node.value, ast.BinOp) and isinstance(node.value.op, ast.Add)
        ):
            name = node.targets[0].id
            left, right = node.value.left, node.value.right
            if isinstance(left, ast.Name) and left.id == name:
                yield node, name, right
            elif isinstance(right, ast.Name) and right.id == name:
                yield node, name, left


def _initialised_outside(parsed: ParsedModule, total: str, node: ast.AST, loop: Loop) -> bool:
    """Is `total` assigned before the loop, in the same function, so that it spans iterations?"""
    scope = parsed.enclosing(node, (ast.FunctionDef, ast.AsyncFunctionDef)) or parsed.tree
    for assign in nodes(parsed, (ast.Assign, ast.AnnAssign), scope):
        targets = assign.targets if isinstance(assign, ast.Assign) else [assign.target]
        if any(isinstance(t, ast.Name) and t.id == total for t in targets) and assign.lineno < loop.node.lineno and (
            loop.node not in parsed.ancestors(assign)
        ):
            return True
    return False


def _graph_carrier(facts: TrainingFacts, expr: ast.AST, loop: Loop, at: ast.AST, depth: int) -> ast.AST | None:
    """The sub-expression of `expr` that is a loss tensor with its graph, if any."""
    if depth > 6:
        return None
    parsed = facts.parsed
    if isinstance(expr, ast.Name):
        return expr if _is_loss_name(facts, expr.id, loop, at, depth) else None
    if isinstance(expr, ast.BinOp):
        return _graph_carrier(facts, expr.left, loop, at, depth + 1) or _graph_carrier(facts, expr.right, loop, at,
                                                                                          depth + 1)
    if isinstance(expr, ast.UnaryOp):
        return _graph_carrier(facts, expr.operand, loop, at, depth + 1)
    if not isinstance(expr, ast.Call):
        return None
    if _is_loss_call(facts, expr):
        return expr
    func = expr.func
    if isinstance(func, ast.Attribute) and func.attr in _GRAPH_KEEPING_METHODS:
        return _graph_carrier(facts, func.value, loop, at, depth + 1)
    return None


def _is_loss_call(facts: TrainingFacts, call: ast.Call) -> bool:
    qualified = facts.parsed.qualified_name(call.func) or ""
    if qualified.startswith("torch.nn.functional.") and qualified.rsplit(".", 1)[-1] in _FUNCTIONAL_LOSSES:
        return True
    return isinstance(call.func, (ast.Name, ast.Attribute)) and facts.kind_of(call.func) is Kind.LOSS


def _is_loss_name(facts: TrainingFacts, name: str, loop: Loop, at: ast.AST, depth: int) -> bool:
    """Does `name` hold a loss tensor with its graph where `at` reads it?

    Its last assignment before `at` in the loop decides (`loss = loss.item()` makes it a
    number); with no assignment, a `name.backward()` in the loop is the evidence.
    """
    last = _last_assignment(facts.parsed, name, loop, at)
    if last is not None:
        if _graph_carrier(facts, last.value, loop, last, depth + 1) is not None:
            return True
        if _detached(last.value):
            return False
    return any(e.target == name for e in loop.of(EventKind.BACKWARD))


def _detached(expr: ast.AST) -> bool:
    if not isinstance(expr, ast.Call):
        return isinstance(expr, ast.Constant) or (isinstance(expr, ast.Attribute) and expr.attr == "data")
    func = expr.func
    return (isinstance(func, ast.Attribute) and func.attr in _DETACHING_METHODS) or (
        isinstance(func, ast.Name) and func.id in _DETACHING_FUNCTIONS)


def _last_assignment(parsed: ParsedModule, name: str, loop: Loop, at: ast.AST) -> ast.Assign | None:
    found = None
    for assign in nodes(parsed, ast.Assign, loop.node):
        if (assign.lineno, assign.col_offset) >= (at.lineno, at.col_offset):
            break
        if any(isinstance(t, ast.Name) and t.id == name for t in assign.targets):
            found = assign
    return found


class _Objectives:
    """Is a running total back-propagated later (an accumulated objective, not a leak)?

    Answered from the data flow of the total's own function: the names computed from it, and
    whether one of them reaches a `.backward()` / `torch.autograd.backward|grad` receiver. When
    the total flows into the function's return value, the whole file's flow decides (the
    caller may back-propagate the result). Each flow graph is built once, lazily.
    """

    def __init__(self, parsed: ParsedModule):
        self.parsed = parsed
        self._graphs: dict[int, tuple[dict, set]] = {}

    def backpropagated(self, scope: ast.AST, total: str) -> bool:
        flows, reached = self._graph(scope)
        derived = _closure(flows, {(id(scope), total)})
        if derived & reached:
            return True
        returned = isinstance(scope, (ast.FunctionDef, ast.AsyncFunctionDef)) and (0, f"{scope.name}()") in derived
        if not returned:
            return False
        file_flows, file_reached = self._graph(self.parsed.tree)
        return bool(_closure(file_flows, {(id(scope), total)}) & file_reached)

    def _graph(self, scope: ast.AST) -> tuple[dict, set]:
        if id(scope) not in self._graphs:
            self._graphs[id(scope)] = _flow_graph(self.parsed, scope)
        return self._graphs[id(scope)]


def _closure(flows: dict, start: set) -> set:
    seen, pending = set(start), list(start)
    while pending:
        for sink in flows.get(pending.pop(), ()):
            if sink not in seen:
                seen.add(sink)
                pending.append(sink)
    return seen


def _flow_graph(parsed: ParsedModule, scope: ast.AST):
    """(value -> what is computed from it, values read by backward receivers) within `scope`.
    Values are (scope id, name) pairs; helper results (`f()`) are file-wide, scope 0."""
    flows: dict[tuple[int, str], set[tuple[int, str]]] = {}
    sinks_of: dict[int, set[tuple[int, str]]] = {}
    for node in nodes(parsed, (ast.Name, ast.Call), scope):
        if isinstance(node, ast.Name):
            if not isinstance(node.ctx, ast.Load):
                continue
            name = node.id
        elif isinstance(node.func, ast.Name):
            name = f"{node.func.id}()"
        else:
            continue
        statement = parsed.enclosing(node, ast.stmt)
        if not isinstance(statement, (ast.Assign, ast.AugAssign, ast.Return)) or statement.value is None or not inside(
            parsed, node, statement.value
        ):
            continue
        if id(statement) not in sinks_of:
            sinks_of[id(statement)] = _sinks(parsed, statement)
        source = (0, name) if name.endswith("()") else (_scope_id(parsed, statement), name)
        flows.setdefault(source, set()).update(sinks_of[id(statement)])
    reached = set()
    for call in nodes(parsed, ast.Call, scope):
        receiver = None
        if isinstance(call.func, ast.Attribute) and call.func.attr == "backward":
            receiver = call.func.value
        elif parsed.resolves_to(call.func, "torch.autograd.backward", "torch.autograd.grad") and call.args:
            receiver = call.args[0]
        if receiver is not None:
            reached |= _names_read(parsed, receiver)
    return flows, reached


def _sinks(parsed: ParsedModule, statement: ast.stmt) -> set[tuple[int, str]]:
    """What a statement's value flows into: its targets, or its function's result."""
    if isinstance(statement, ast.Return):
        function = parsed.enclosing(statement, (ast.FunctionDef, ast.AsyncFunctionDef))
        return {(0, f"{function.name}()")} if function else set()
    scope = _scope_id(parsed, statement)
    targets = statement.targets if isinstance(statement, ast.Assign) else [statement.target]
    return {(scope, target_key(t)) for t in targets if target_key(t)}


def _scope_id(parsed: ParsedModule, node: ast.AST) -> int:
    return id(parsed.enclosing(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)) or parsed.tree)


def _names_read(parsed: ParsedModule, expr: ast.AST) -> set[tuple[int, str]]:
    scope = _scope_id(parsed, expr)
    names = set()
    for node in nodes(parsed, (ast.Name, ast.Call), expr):
        if isinstance(node, ast.Name):
            names.add((scope, node.id))
        elif isinstance(node.func, ast.Name):
            names.add((0, f"{node.func.id}()"))
    return names


def _not_scalar(facts: TrainingFacts, carrier: ast.AST, loop: Loop, at: ast.AST) -> bool:
    """A loss built with `reduction="none"` has one value per sample: `.item()` would raise."""
    calls = [carrier] if isinstance(carrier, ast.Call) else []
    if isinstance(carrier, ast.Name):
        last = _last_assignment(facts.parsed, carrier.id, loop, at)
        calls = [n for n in ast.walk(last.value) if isinstance(n, ast.Call)] if last else []
    for call in calls:
        constructor = facts.classify(call.func) if isinstance(call.func, (ast.Name, ast.Attribute)) else None
        keywords = list(call.keywords) + (list(constructor[2].keywords) if constructor and constructor[2] else [])
        if any(k.arg == "reduction" and isinstance(k.value, ast.Constant) and k.value.value == "none" for k in keywords):
            return True
    return False
