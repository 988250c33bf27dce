"""code: "what does this print?" — short Python snippets whose outputs come from running them in a sandbox.

Distractors are the outputs of the same snippet with perturbed constants (off-by-one bounds,
other indices), so they have the output's type and magnitude.
"""

from __future__ import annotations

import random
from typing import Callable

from tiesmerge.eval.builtin.common import Item, pick_distinct
from tiesmerge.eval.builtin.sandbox import run_snippets

WORDS = ("python", "matrix", "network", "gradient", "tensor", "compile", "lambda", "vector", "kernel", "iterate",
         "function", "boolean", "integer", "decimal", "sandbox", "library")

Template = Callable[[random.Random], tuple[str, list[str]]]


def _sum_even(rng):
    xs = [rng.randint(1, 30) for _ in range(rng.randint(4, 7))]
    k = rng.randint(2, 5)
    render = lambda xs, k, m: f"xs = {xs}\nprint(sum(v * {k} for v in xs if v % {m} == 0))"
    return render(xs, k, 2), [render(xs, k, 3), render(xs, k + 1, 2), render(xs[:-1], k, 2), render(xs, k - 1, 2)]


def _slice(rng):
    w = rng.choice(WORDS)
    i = rng.randint(0, 3)
    j = rng.randint(i + 2, len(w))
    render = lambda i, j: f's = "{w}"\nprint(s[{i}:{j}])'
    return render(i, j), [render(i + 1, j), render(i, j - 1), render(i, j + 1), render(max(i - 1, 0), j - 1)]


def _loop(rng):
    n, m = rng.randint(3, 12), rng.randint(2, 9)
    render = lambda n, m: f"t = 0\nfor i in range({n}):\n    t += i * {m}\nprint(t)"
    return render(n, m), [render(n + 1, m), render(n - 1, m), render(n, m + 1), render(n + 2, m)]


def _divmod(rng):
    a, b = rng.randint(20, 200), rng.randint(3, 12)
    render = lambda a, b: f"print({a} // {b}, {a} % {b})"
    return render(a, b), [render(a + 1, b), render(a, b + 1), render(a - b, b), render(a, b - 1)]


def _halving(rng):
    n = rng.randint(5, 5000)
    render = lambda n, d: f"n = {n}\nc = 0\nwhile n > 1:\n    n = n // {d}\n    c += 1\nprint(c)"
    return render(n, 2), [render(n, 3), render(n * 2, 2), render(n * 4, 2), render(n, 4)]


def _sort_median(rng):
    xs = rng.sample(range(1, 60), rng.choice((5, 7)))
    extra = rng.randint(1, 60)
    render = lambda xs, idx: f"xs = {xs}\nxs.append({extra})\nxs.sort()\nprint(xs[{idx}])"
    mid = (len(xs) + 1) // 2
    return render(xs, mid), [render(xs, mid - 1), render(xs, mid + 1), render(xs, 0), render(xs, -1)]


def _count(rng):
    w = rng.choice(WORDS) * rng.randint(1, 3)
    ch = rng.choice(sorted(set(w)))
    render = lambda w, ch: f'print("{w}".upper().count("{ch.upper()}") + len("{w}"))'
    others = sorted(set(w) - {ch})
    return render(w, ch), [render(w, c) for c in others[:3]] + [render(w[:-1], ch), render(w + "x", ch)]


def _dict(rng):
    a, b = rng.randint(1, 20), rng.randint(2, 9)
    render = lambda a, b, key: (f'd = {{"a": {a}, "b": {b}}}\nd["c"] = d["a"] * d["b"]\nd["a"] += 1\n'
                                f'print(d["{key}"] + len(d))')
    return render(a, b, "c"), [render(a, b, "a"), render(a, b, "b"), render(a + 1, b, "c"), render(a, b + 1, "c")]


def _list_comp(rng):
    n, p = rng.randint(4, 10), rng.randint(2, 3)
    render = lambda n, p, start: f"print([i ** {p} for i in range({start}, {n})][-2:])"
    return render(n, p, 1), [render(n + 1, p, 1), render(n - 1, p, 1), render(n, p, 2) if n > 4 else render(n + 2, p, 1),
                             render(n, p + 1, 1)]


def _max_key(rng):
    ws = rng.sample(WORDS, 4)
    render = lambda ws, fn: f"words = {ws}\nprint({fn}(words, key=len), len(words))"
    return render(ws, "max"), [render(ws, "min"), render(ws[1:], "max"), render(ws[:-1], "max"), render(ws[::-1], "min")]


TEMPLATES: tuple[Template, ...] = (_sum_even, _slice, _loop, _divmod, _halving, _sort_median, _count, _dict,
                                   _list_comp, _max_key)


def _render(stdout: str) -> str:
    return " ".join(stdout.strip().splitlines())


def generate_batch(rng: random.Random, n: int) -> list[Item]:
    """n items (some may be dropped when too few distinct distractors came out); snippets run in one sandbox."""
    drafts = [rng.choice(TEMPLATES)(rng) for _ in range(n)]
    flat = [code for main, alts in drafts for code in (main, *alts)]
    outcome = run_snippets(flat, per_snippet_timeout=10.0)
    slow = [r for r in outcome if not r["ok"] and r["error"].startswith("TimeoutError")]
    if slow:  # a timeout depends on machine load, so it must not silently change the generated set
        raise RuntimeError(f"{len(slow)} code snippet(s) timed out in the sandbox; the machine is overloaded, retry")
    results = iter(outcome)
    items = []
    for main, alts in drafts:
        res = [next(results) for _ in range(1 + len(alts))]
        if not res[0]["ok"]:
            continue
        answer = _render(res[0]["stdout"])
        wrong = [_render(r["stdout"]) for r in res[1:] if r["ok"]]
        distractors = pick_distinct(answer, wrong, rng)
        if distractors is None or not answer:
            continue
        items.append(Item(f"What does this Python code print?\n```python\n{main}\n```", answer, distractors,
                          {"kind": "code", "code": main}))
    return items
