"""Name the dimensions that follow a free input size, by comparing runs (stdlib only).

A probe's call runs once at the example sizes and once more per free size with only that size
changed (B 2 → 3, H 32 → 64, ...). A dimension that differs between the example run and the
run where `H` changed follows `H`; its two values give the expression: `H` itself, `H/2 - 2`,
`2*H`, or a product such as `H*W*16` when it follows several sizes in proportion. A dimension
that no change moved is fixed and stays a number; one that moved in a way no simple expression
explains also stays a number (the example's).

torch's own symbolic shapes (FakeTensorMode + ShapeEnv) were measured for this and not kept:
~0.2-0.9 s for a LeNet (vs ~2 ms on meta), 2.4-3.5 s for a diffusion U-Net (vs 46 ms), whose
every size ended specialised by the model's own Python code (see docs/shapes.md).
"""

from __future__ import annotations

from dataclasses import replace
from fractions import Fraction
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch_lsp.shapes.report import Value


def name_dims(example: "Value", variants: dict[str, "Value"], sizes: dict[str, int],
              changed: dict[str, int]) -> "Value":
    """`example` with `dims` set, given the same value in each variant run (by the symbol that
    changed), the example's symbol sizes and each symbol's changed size."""
    if example.kind != "tensor":
        if any(len(v.items) != len(example.items) or v.kind != example.kind for v in variants.values()):
            return example
        items = tuple(name_dims(item, {s: v.items[i] for s, v in variants.items()}, sizes, changed)
                      for i, item in enumerate(example.items))
        return replace(example, items=items)
    shape = example.shape or ()
    comparable = {s: v for s, v in variants.items() if v.kind == "tensor" and len(v.shape or ()) == len(shape)}
    if len(comparable) != len(variants):
        return example
    names = tuple(_expression(size, {s: v.shape[i] for s, v in comparable.items()}, sizes, changed)
                  for i, size in enumerate(shape))
    return replace(example, dims=names) if any(names) else example


def _expression(size: int, moved: dict[str, int], sizes: dict[str, int], changed: dict[str, int]) -> str | None:
    """How one dimension follows the symbols: None when it is fixed or unexplained."""
    followed = {s: new for s, new in moved.items() if new != size}
    if not followed:
        return None
    if len(followed) == 1:
        (symbol, new), = followed.items()
        return _affine(symbol, sizes[_key(symbol)], changed[symbol], size, new)
    return _product(size, followed, sizes, changed)


def _key(symbol: str) -> str:
    return symbol


def _affine(symbol: str, x0: int, x1: int, y0: int, y1: int) -> str | None:
    """y = a*x + b through (x0, y0), (x1, y1), with a = k or 1/k: `H`, `2*H`, `H/2 - 2`."""
    if x1 == x0:
        return None
    slope = Fraction(y1 - y0, x1 - x0)
    if slope <= 0 or (slope.numerator != 1 and slope.denominator != 1):
        return None
    offset = y0 - slope * x0
    if offset.denominator != 1:
        # Floor division (`H // 2` for odd H): accept when rounding down explains y0.
        offset = Fraction(y0) - Fraction(int(slope * x0))
        if offset.denominator != 1:
            return None
    if slope == 1:
        head = symbol
    elif slope.denominator == 1:
        head = f"{slope.numerator}*{symbol}"
    else:
        head = f"{symbol}/{slope.denominator}"
    offset_int = int(offset)
    if offset_int == 0:
        return head
    return f"{head} + {offset_int}" if offset_int > 0 else f"{head} - {-offset_int}"


def _product(size: int, followed: dict[str, int], sizes: dict[str, int], changed: dict[str, int]) -> str | None:
    """y = k * x1 * x2 ...: each symbol's change scales the dimension by the same ratio."""
    for symbol, new in followed.items():
        if Fraction(new, size) != Fraction(changed[symbol], sizes[_key(symbol)]):
            return None
    product = 1
    for symbol in followed:
        product *= sizes[_key(symbol)]
    k = Fraction(size, product)
    names = "*".join(sorted(followed, key="BDTLHW".find))
    if k == 1:
        return names
    if k.denominator == 1:
        return f"{names}*{k.numerator}"
    if k.numerator == 1:
        return f"{names}/{k.denominator}"
    return None


def with_dims(values: list["Value"], variant_values: dict[str, list["Value"]], sizes: dict[str, int],
              changed: dict[str, int]) -> list["Value"]:
    """Name the dims of a recorded list of values (one per distinct shape a line saw) when every
    variant saw the same number of values; else leave them as they are."""
    if not variant_values or any(len(v) != len(values) for v in variant_values.values()):
        return values
    return [name_dims(value, {s: v[i] for s, v in variant_values.items()}, sizes, changed)
            for i, value in enumerate(values)]
