"""stem: element facts from `periodictable`, CODATA constants and SI units from `scipy.constants`,
and unit conversions computed with scipy's conversion factors."""

from __future__ import annotations

import random

from tiesmerge.eval.builtin.common import Item, fmt_num, numeric_distractors, pick_distinct

CONSTANTS = (
    "speed of light in vacuum", "Planck constant", "Boltzmann constant", "Avogadro constant", "elementary charge",
    "electron mass", "proton mass", "neutron mass", "Newtonian constant of gravitation", "molar gas constant",
    "Stefan-Boltzmann constant", "vacuum electric permittivity", "Faraday constant", "Rydberg constant",
    "fine-structure constant", "Bohr radius", "standard acceleration of gravity", "atomic mass constant",
    "Wien wavelength displacement law constant", "vacuum mag. permeability",
)

# (from-unit, scipy.constants attribute giving metres/kg/pascals/joules/seconds per unit, SI unit name)
CONVERSIONS = (
    ("miles", "mile", "metres"), ("inches", "inch", "metres"), ("feet", "foot", "metres"), ("yards", "yard", "metres"),
    ("nautical miles", "nautical_mile", "metres"), ("pounds", "pound", "kilograms"), ("ounces", "ounce", "kilograms"),
    ("atmospheres", "atm", "pascals"), ("bar", "bar", "pascals"), ("calories (thermochemical)", "calorie", "joules"),
    ("electronvolts", "eV", "joules"), ("hours", "hour", "seconds"), ("days", "day", "seconds"),
    ("US gallons", "gallon", "cubic metres"), ("litres", "liter", "cubic metres"), ("knots", "knot", "metres per second"),
)


def elements() -> list:
    import periodictable

    return [periodictable.elements[n] for n in range(1, 101)]


def element_items(rng: random.Random) -> list[Item]:
    els = elements()
    items = []
    for i, el in enumerate(els):
        near = [e for e in els[max(0, i - 6): i + 7] if e is not el]
        name = el.name.capitalize()
        meta = {"kind": "element", "number": el.number}
        d = pick_distinct(el.symbol, [e.symbol for e in near], rng)
        if d:
            items.append(Item(f"What is the chemical symbol of {name}?", el.symbol, d, {**meta, "field": "symbol"}))
        d = pick_distinct(name, [e.name.capitalize() for e in near], rng)
        if d:
            items.append(Item(f"Which element has the chemical symbol {el.symbol}?", name, d, {**meta, "field": "name"}))
        d = numeric_distractors(el.number, rng)
        if d:
            items.append(Item(f"What is the atomic number of {name}?", str(el.number), d, {**meta, "field": "number"}))
        mass = f"{el.mass:.2f}"
        d = pick_distinct(mass, [f"{e.mass:.2f}" for e in near], rng)
        if d:
            items.append(Item(f"What is the standard atomic mass of {name}, in daltons (to 2 decimals)?", mass, d,
                              {**meta, "field": "mass"}))
    return items


def constant_items(rng: random.Random) -> list[Item]:
    from scipy.constants import physical_constants

    items = []
    for name in CONSTANTS:
        value, unit, _ = physical_constants[name]
        answer = fmt_num(value)
        wrong = [fmt_num(value * f) for f in (10, 0.1, 100, 0.01, 2, 0.5)]
        d = pick_distinct(answer, wrong, rng)
        label = f" in {unit}" if unit else " (dimensionless)"
        if d:
            items.append(Item(f"What is the CODATA value of the {name}{label}, to 4 significant figures?", answer, d,
                              {"kind": "constant", "name": name}))
        if unit:
            units = [physical_constants[c][1] for c in CONSTANTS if physical_constants[c][1]]
            d = pick_distinct(unit, units, rng)
            if d:
                items.append(Item(f"In SI units, what is the unit of the {name}?", unit, d, {"kind": "unit", "name": name}))
    return items


def conversion(rng: random.Random) -> Item | None:
    import scipy.constants as sc

    label, attr, si = rng.choice(CONVERSIONS)
    amount = rng.choice((rng.randint(2, 500), round(rng.uniform(0.5, 50), 1)))
    factor = getattr(sc, attr)
    value = amount * factor
    same_si = [getattr(sc, a) for (_, a, s) in CONVERSIONS if s == si and a != attr]
    d = numeric_distractors(value, rng, extra=[amount * f for f in same_si] + [amount / factor, value * 10, value / 10])
    if d is None:
        return None
    return Item(f"Convert {fmt_num(amount)} {label} to {si} (4 significant figures).", fmt_num(value), d,
                {"kind": "conversion", "amount": amount, "unit": attr})


def pool(rng: random.Random) -> list[Item]:
    """The finite fact questions (elements, constants, units)."""
    return element_items(rng) + constant_items(rng)


def generate(rng: random.Random) -> Item | None:
    """Unlimited conversion questions, to fill beyond the fact pool."""
    return conversion(rng)
