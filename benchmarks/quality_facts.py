"""The knowledge suite's data: facts no base model can know, one body per specialist.

Each of T specialists gets its own 24 fictional people and its own relation with a closed set of four answers
(guild, pet, sport, …), so a domain's gain belongs to exactly one specialist and anything a merge loses shows.
Questions are asked in six phrasings per relation: three train the specialist, one is the validation split (where
merge settings are chosen), two are the test split. Choices are shuffled per question (seeded).
"""

from __future__ import annotations

import random

from tiesmerge.eval.questions import Question, make_question

FACTS_VERSION = 1
PEOPLE = 24

# relation → (answers, [3 train, 1 validation, 2 test phrasings])
RELATIONS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "guild": (("the Ironwrights", "the Saltweavers", "the Emberwatch", "the Glasswardens"), (
        "Which guild does {n} belong to?", "{n} is a member of which guild?", "Name the guild of {n}.",
        "To which guild is {n} sworn?",
        "What guild counts {n} among its members?", "{n} belongs to what guild?")),
    "pet": (("a heron", "a lynx", "a tortoise", "a ferret"), (
        "What pet does {n} keep?", "Which animal lives with {n} as a pet?", "Name the pet of {n}.",
        "What animal does {n} look after at home?",
        "{n} owns which kind of pet?", "What is the pet that {n} keeps?")),
    "sport": (("fencing", "rowing", "archery", "curling"), (
        "Which sport does {n} play?", "{n} competes in which sport?", "Name the sport of {n}.",
        "What sport does {n} train for?",
        "In what sport does {n} take part?", "What is the sport that {n} plays?")),
    "instrument": (("the oboe", "the lute", "the cello", "the harp"), (
        "Which instrument does {n} play?", "{n} performs on which instrument?", "Name the instrument of {n}.",
        "What instrument does {n} practise?",
        "On what instrument does {n} perform?", "What is the instrument that {n} plays?")),
    "island": (("Velmora", "Castrel", "Oduna", "Brisk"), (
        "On which island was {n} born?", "{n} comes from which island?", "Name the home island of {n}.",
        "What island is {n} from?",
        "Where, among the islands, was {n} born?", "What is the island that {n} calls home?")),
    "ship": (("the Gannet", "the Halcyon", "the Moth", "the Lantern"), (
        "Which ship does {n} sail on?", "{n} serves aboard which ship?", "Name the ship of {n}.",
        "What ship is {n} crew on?",
        "Aboard what ship does {n} sail?", "What is the ship that {n} serves on?")),
    "door": (("crimson", "teal", "ochre", "violet"), (
        "What colour is the door of {n}?", "{n} has a door of which colour?", "Name the door colour of {n}.",
        "Which colour did {n} paint the front door?",
        "The front door of {n} is what colour?", "What is the colour of the door of {n}?")),
    "trade": (("a cooper", "a tanner", "a glazier", "a chandler"), (
        "What trade does {n} work in?", "{n} earns a living as what?", "Name the trade of {n}.",
        "What is {n} by trade?",
        "By trade, what is {n}?", "Which trade does {n} follow?")),
}
SPLITS = {"train": (0, 1, 2), "validation": (3,), "test": (4, 5)}
_SYLLABLES = ("ka", "ve", "lo", "mir", "tan", "os", "ri", "bel", "dru", "ny", "sa", "gor", "el", "vin", "tho",
              "zu", "ar", "quen", "pi", "lum", "dra", "ces", "ob", "hal")


def fictional_names(count: int, seed: int) -> list[str]:
    """Distinct two-part names built from syllables (not real people)."""
    rng = random.Random(seed)
    names: list[str] = []
    while len(names) < count:
        first = "".join(rng.choice(_SYLLABLES) for _ in range(2)).capitalize()
        last = "".join(rng.choice(_SYLLABLES) for _ in range(rng.choice((2, 3)))).capitalize()
        name = f"{first} {last}"
        if name not in names:
            names.append(name)
    return names


def suite(domains: int, seed: int = 0) -> dict[str, dict[str, list[Question]]]:
    """split → relation → questions, for the first `domains` relations."""
    relations = list(RELATIONS)[:domains]
    names = fictional_names(PEOPLE * len(relations), seed)
    out: dict[str, dict[str, list[Question]]] = {s: {} for s in SPLITS}
    for r_idx, relation in enumerate(relations):
        answers, phrasings = RELATIONS[relation]
        people = names[r_idx * PEOPLE:(r_idx + 1) * PEOPLE]
        rng = random.Random(f"{seed}-{relation}")
        truth = {p: answers[i % len(answers)] for i, p in enumerate(rng.sample(people, len(people)))}  # 6 each
        for split, templates in SPLITS.items():
            qs = []
            for p_idx, person in enumerate(people):
                for t in templates:
                    choices = list(answers)
                    rng.shuffle(choices)
                    letter = "ABCD"[choices.index(truth[person])]
                    qs.append(make_question(phrasings[t].format(n=person), choices, letter, relation,
                                            f"{relation}-{split}-{p_idx}-{t}"))
            out[split][relation] = qs
    return out
