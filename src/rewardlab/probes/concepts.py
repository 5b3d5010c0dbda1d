"""The concepts a linear probe looks for: labelled texts from a JSONL file, or one built in.

A concept is a list of texts, each with one of two labels, and a *group* per text: rows of one group are
kept on the same side of the train/test split. A file's row may name its group (``"group": ...``); without
one every text is its own group. The built-in ``hypernym`` concept groups by word, so a probe tested on a
word has never seen that word in training and cannot pass by remembering it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from rewardlab.errors import RewardlabError

MIN_ROWS = 8  # fewer leave too little for both a train and a test split

# word -> its hypernym, ten words to a category. Categories are chosen not to overlap (no tool that is
# also a weapon, no fruit eaten as a vegetable); where one does sit under another (a salmon is also an
# animal), IMPLIED says so and the other is never offered as a wrong hypernym.
HYPERNYMS: dict[str, tuple[str, ...]] = {
    "animal": ("dog", "cat", "horse", "cow", "lion", "tiger", "elephant", "rabbit", "wolf", "bear"),
    "bird": ("sparrow", "eagle", "robin", "owl", "pigeon", "parrot", "crow", "swan", "penguin", "hawk"),
    "fish": ("salmon", "trout", "tuna", "cod", "carp", "herring", "sardine", "mackerel", "pike", "halibut"),
    "insect": (
        "ant",
        "bee",
        "beetle",
        "wasp",
        "mosquito",
        "butterfly",
        "moth",
        "grasshopper",
        "termite",
        "flea",
    ),  # fmt: skip
    "tree": ("oak", "pine", "maple", "birch", "willow", "elm", "cedar", "spruce", "beech", "poplar"),
    "flower": (
        "rose",
        "tulip",
        "daisy",
        "lily",
        "orchid",
        "sunflower",
        "daffodil",
        "carnation",
        "marigold",
        "poppy",
    ),  # fmt: skip
    "fruit": ("apple", "banana", "cherry", "grape", "mango", "pear", "peach", "plum", "lemon", "pineapple"),
    "vegetable": (
        "carrot",
        "potato",
        "onion",
        "cabbage",
        "lettuce",
        "spinach",
        "broccoli",
        "celery",
        "turnip",
        "radish",
    ),  # fmt: skip
    "tool": (
        "hammer",
        "wrench",
        "screwdriver",
        "saw",
        "chisel",
        "drill",
        "shovel",
        "rake",
        "trowel",
        "clamp",
    ),
    "instrument": (
        "violin",
        "piano",
        "guitar",
        "flute",
        "trumpet",
        "drum",
        "cello",
        "clarinet",
        "harp",
        "trombone",
    ),  # fmt: skip
    "vehicle": (
        "car",
        "bus",
        "truck",
        "bicycle",
        "motorcycle",
        "tractor",
        "van",
        "tram",
        "scooter",
        "ambulance",
    ),  # fmt: skip
    "clothing": ("shirt", "jacket", "sweater", "skirt", "coat", "dress", "sock", "scarf", "blouse", "vest"),
    "furniture": (
        "chair",
        "sofa",
        "bed",
        "desk",
        "wardrobe",
        "bench",
        "stool",
        "bookcase",
        "armchair",
        "dresser",
    ),  # fmt: skip
    "weapon": (
        "sword",
        "spear",
        "dagger",
        "rifle",
        "pistol",
        "cannon",
        "crossbow",
        "musket",
        "grenade",
        "bayonet",
    ),  # fmt: skip
    "building": (
        "house",
        "church",
        "castle",
        "barn",
        "cottage",
        "temple",
        "palace",
        "skyscraper",
        "warehouse",
        "mansion",
    ),  # fmt: skip
}
IMPLIED = {"bird": {"animal"}, "fish": {"animal"}, "insect": {"animal"}}
HYPERNYM_LABELS = ("random word", "hypernym")


@dataclass(frozen=True)
class ConceptRow:
    text: str
    label: int  # 0 or 1: an index into Concept.labels
    group: str  # rows of one group stay on one side of the split


@dataclass
class Concept:
    name: str
    labels: tuple[str, str]  # what label 0 and label 1 stand for
    rows: list[ConceptRow]
    grouped_by: str  # what a group is: "word", "group" (a file's own) or "text"


def load_concept(spec: str, seed: int = 0) -> Concept:
    """A built-in concept by name (``hypernym``), or a JSONL file of ``{"text": ..., "label": ...}`` rows."""
    if spec in BUILT_IN:  # a built-in name wins; a file of that name is read as ./hypernym
        return BUILT_IN[spec](seed)
    path = Path(spec)
    if path.suffix or len(path.parts) > 1 or path.exists():
        return read_concept(path)
    raise RewardlabError(
        f"unknown built-in concept {spec!r} (built in: {', '.join(BUILT_IN)}); or give a .jsonl file of "
        '{"text": ..., "label": ...} rows'
    )


def read_concept(path: Path) -> Concept:
    """Rows with a non-empty ``text`` and a ``label`` (two distinct values in all: 0/1, true/false or two
    strings), optionally a ``group``."""
    from rewardlab.data.quality import read_rows

    found = []
    for number, _, row in read_rows(path, "concept"):
        where = f"{path} line {number}"
        if not isinstance(row, dict):
            raise RewardlabError(f'{where}: a row must be an object like {{"text": ..., "label": ...}}')
        text, label = row.get("text"), row.get("label")
        if not isinstance(text, str) or not text.strip():
            raise RewardlabError(f"{where}: the row has no text (a non-empty string under 'text')")
        if isinstance(label, float) or not isinstance(label, str | int):  # bool is an int
            raise RewardlabError(f"{where}: the row has no label (a string or an integer under 'label')")
        group = row.get("group")
        found.append((text, label, None if group is None else str(group)))
    values = sorted({label for _, label, _ in found}, key=lambda value: (str(type(value)), value))
    if len(values) != 2:
        shown = ", ".join(map(repr, values[:5])) + (", …" if len(values) > 5 else "")
        raise RewardlabError(
            f"{path}: a concept needs exactly 2 label values, found {len(values)}"
            + (f" ({shown})" * bool(values))
        )
    grouped = any(group is not None for _, _, group in found)
    rows = [
        ConceptRow(text, values.index(label), group if group is not None else text)
        for text, label, group in found
    ]
    return checked(Concept(path.name, (str(values[0]), str(values[1])), rows, "group" if grouped else "text"))


def checked(concept: Concept) -> Concept:
    if len(concept.rows) < MIN_ROWS:
        raise RewardlabError(
            f"{concept.name}: {len(concept.rows)} rows are too few to split into train and test "
            f"(at least {MIN_ROWS})"
        )
    return concept


# -- built in ------------------------------------------------------------------------------------------


def _article(word: str) -> str:
    return "An" if word[0] in "aeiou" else "A"


def hypernym_sentence(word: str, hypernym: str) -> str:
    return f"{_article(word)} {word} is a kind of {hypernym}."


def hypernym_concept(seed: int = 0) -> Concept:
    """ "Is the word's parent a real hypernym of it, or a random word?": for each word, "A dog is a kind of
    animal." (label 1) and the same word with a category it does not belong to, "A dog is a kind of
    instrument." (label 0). Every category is the wrong one for as many words as it is the right one for,
    so neither the word nor the category alone tells the label; only whether they fit does."""
    words = [(word, category) for category, members in HYPERNYMS.items() for word in members]
    wrong = _wrong_categories(words, random.Random(seed))
    rows = []
    for (word, category), other in zip(words, wrong, strict=True):
        rows.append(ConceptRow(hypernym_sentence(word, category), 1, word))
        rows.append(ConceptRow(hypernym_sentence(word, other), 0, word))
    return Concept("hypernym", HYPERNYM_LABELS, rows, "word")


def _fits(category: str, other: str) -> bool:
    return other == category or other in IMPLIED.get(category, ())


def _wrong_categories(words: list[tuple[str, str]], rng: random.Random) -> list[str]:
    """A wrong category per word, each category used exactly as often as it has words: a shuffle, then
    every misfit swapped with a later or earlier slot where both end up wrong for their words."""
    slots = [category for _, category in words]
    rng.shuffle(slots)
    for i, (_, category) in enumerate(words):
        if not _fits(category, slots[i]):
            continue
        order = list(range(len(words)))
        rng.shuffle(order)
        for j in order:
            if not _fits(category, slots[j]) and not _fits(words[j][1], slots[i]):
                slots[i], slots[j] = slots[j], slots[i]
                break
        else:  # cannot happen with the categories above; a guard against a future edit of them
            raise AssertionError(f"no wrong category left for {words[i][0]!r}")
    return slots


BUILT_IN = {"hypernym": hypernym_concept}
