"""math: multi-step arithmetic, percentages, linear equations and word problems; answers computed."""

from __future__ import annotations

import random
from fractions import Fraction

from tiesmerge.eval.builtin.common import Item, fmt_num, numeric_distractors

NAMES = ("Ava", "Ben", "Chen", "Dara", "Eli", "Fatima", "Gus", "Hana", "Ivan", "Jo", "Kofi", "Lena", "Mateo", "Nia")
THINGS = ("apples", "pencils", "stickers", "marbles", "books", "cookies", "cards", "stamps")


def evaluate(expr: str) -> Fraction:
    """The oracle: exact rational evaluation of an arithmetic expression over + - * / and parentheses."""
    import ast

    def ev(node: ast.AST) -> Fraction:
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
            return Fraction(node.value)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -ev(node.operand)
        if isinstance(node, ast.BinOp):
            a, b = ev(node.left), ev(node.right)
            ops = {ast.Add: a + b, ast.Sub: a - b, ast.Mult: a * b}
            if isinstance(node.op, ast.Div):
                return a / b
            return ops[type(node.op)]
        raise ValueError(f"unsupported expression: {ast.dump(node)}")

    return ev(ast.parse(expr, mode="eval"))


def _item(question: str, expr: str, rng: random.Random, mistakes: tuple[str, ...] = ()) -> Item | None:
    value = float(evaluate(expr))
    extra = []
    for m in mistakes:
        try:
            extra.append(float(evaluate(m)))
        except ZeroDivisionError:
            pass
    distractors = numeric_distractors(value, rng, extra=extra)
    if distractors is None:
        return None
    return Item(question, fmt_num(value), distractors, {"kind": "arith", "expr": expr})


def arithmetic(rng: random.Random) -> Item | None:
    a, b, c, d = (rng.randint(2, 60) for _ in range(4))
    form = rng.randrange(3)
    if form == 0:
        return _item(f"What is {a} + {b} × {c} − {d}?", f"{a} + {b} * {c} - {d}", rng,
                     (f"({a} + {b}) * {c} - {d}", f"{a} + {b} * ({c} - {d})"))
    if form == 1:
        return _item(f"What is ({a} + {b}) × {c} − {d}?", f"({a} + {b}) * {c} - {d}", rng,
                     (f"{a} + {b} * {c} - {d}", f"({a} + {b}) * ({c} - {d})"))
    return _item(f"What is {a} × {b} − {c} × {d}?", f"{a} * {b} - {c} * {d}", rng,
                 (f"({a} * {b} - {c}) * {d}", f"{a} * ({b} - {c}) * {d}"))


def percentage(rng: random.Random) -> Item | None:
    p = rng.choice((5, 10, 12, 15, 20, 25, 30, 35, 40, 45, 60, 75, 80, 120, 150))
    n = rng.randint(2, 80) * 20
    if rng.random() < 0.5:
        return _item(f"What is {p}% of {n}?", f"{p} * {n} / 100", rng, (f"{n} / {p}", f"{p} * {n} / 10"))
    return _item(f"A price of {n} dollars rises by {p}%. What is the new price in dollars?", f"{n} + {n} * {p} / 100", rng,
                 (f"{n} * {p} / 100", f"{n} - {n} * {p} / 100"))


def linear(rng: random.Random) -> Item | None:
    a, x, b = rng.randint(2, 12), rng.randint(-15, 25), rng.randint(-40, 40)
    c = a * x + b
    sign = "+" if b >= 0 else "−"
    return _item(f"Solve for x: {a}x {sign} {abs(b)} = {c}. What is x?", f"({c} - ({b})) / {a}", rng,
                 (f"({c} + ({b})) / {a}", f"{c} / {a} - ({b})", f"-({c} - ({b})) / {a}"))


def word(rng: random.Random) -> Item | None:
    name, thing = rng.choice(NAMES), rng.choice(THINGS)
    form = rng.randrange(3)
    if form == 0:
        a, b = rng.randint(3, 15), rng.randint(4, 24)
        c = rng.randint(1, a * b - 1)
        return _item(f"{name} has {a} boxes with {b} {thing} in each and gives away {c} {thing}. "
                     f"How many {thing} does {name} have left?", f"{a} * {b} - {c}", rng, (f"{a} * {b} + {c}", f"{a} + {b} - {c}"))
    if form == 1:
        price, qty = rng.randint(2, 30), rng.randint(2, 12)
        paid = (price * qty // 10 + rng.randint(1, 5)) * 10
        return _item(f"{name} buys {qty} {thing} at {price} dollars each and pays with {paid} dollars. "
                     f"How much change, in dollars, does {name} get?", f"{paid} - {price} * {qty}", rng,
                     (f"{paid} - {price} - {qty}", f"{price} * {qty}"))
    speed, hours, extra = rng.randint(30, 90), rng.randint(2, 9), rng.randint(10, 99)
    return _item(f"A train travels at {speed} km per hour for {hours} hours, then {extra} km more. "
                 f"How many km does it travel in total?", f"{speed} * {hours} + {extra}", rng,
                 (f"{speed} * ({hours} + {extra})", f"{speed} + {hours} + {extra}"))


GENERATORS = (arithmetic, percentage, linear, word)


def generate(rng: random.Random) -> Item | None:
    return rng.choice(GENERATORS)(rng)
