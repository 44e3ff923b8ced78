"""Planted paraphrase groups for semantic dedup (tests, bench/semdedup.py): each group is one
scene (subject, colour, place, time), worded once, then re-worded as a re-upload's alt text is:
another sentence frame, and at most `max_swaps` slots said with a synonym. Groups differ in at
least one slot. Written here from word lists; nothing downloaded."""

from __future__ import annotations

import numpy as np

from curation.samples.dups import Planted

SUBJECTS = [
    ("car", "automobile", "sedan"), ("dog", "puppy", "hound"), ("cat", "kitten", "house cat"),
    ("bicycle", "bike", "pushbike"), ("boat", "rowing boat", "small vessel"), ("house", "cottage", "home"),
    ("bird", "songbird", "little bird"), ("horse", "pony", "stallion"), ("truck", "lorry", "pickup truck"),
    ("chair", "armchair", "seat"), ("umbrella", "parasol", "brolly"), ("teapot", "tea kettle", "kettle"),
    ("guitar", "acoustic guitar", "six-string"), ("backpack", "rucksack", "knapsack"), ("sofa", "couch", "settee"),
    ("airplane", "aeroplane", "jet"), ("train", "locomotive", "railway engine"), ("lamp", "desk lamp", "light"),
    ("cake", "birthday cake", "layer cake"), ("shoe", "sneaker", "trainer"), ("mug", "coffee cup", "cup"),
    ("tree", "oak", "leafy tree"), ("flower", "blossom", "bloom"), ("motorcycle", "motorbike", "scooter"),
    ("bus", "coach", "city bus"), ("kite", "paper kite", "flying kite"), ("clock", "wall clock", "timepiece"),
    ("book", "novel", "paperback"), ("sheep", "lamb", "ewe"), ("cow", "calf", "dairy cow"),
]
COLOURS = [("red", "crimson", "scarlet"), ("blue", "navy", "azure"), ("green", "emerald", "olive"),
           ("yellow", "golden", "lemon-coloured"), ("white", "snow-white", "ivory"), ("black", "jet-black", "ebony"),
           ("brown", "chocolate-brown", "tan"), ("orange", "tangerine", "amber"), ("pink", "rose", "salmon-pink"),
           ("purple", "violet", "lilac"), ("grey", "silver", "ash-grey"), ("striped", "banded", "pinstriped")]
PLACES = [("on a city street", "along an urban road", "by the kerb downtown"),
          ("on a sandy beach", "by the seaside", "on the shore"), ("in a snowy forest", "among snow-covered trees",
                                                                      "in the winter woods"),
          ("in a kitchen", "on a kitchen counter", "next to the stove"), ("in a green meadow", "in a grassy field",
                                                                          "on a lawn"),
          ("in front of a brick wall", "against a wall of bricks", "beside a red-brick wall"),
          ("on a wooden table", "on a timber tabletop", "atop a wooden desk"),
          ("in a busy market", "at a crowded bazaar", "among market stalls"),
          ("near a mountain lake", "by an alpine lake", "beside a lake in the mountains"),
          ("in an empty parking lot", "in a deserted car park", "on a vacant parking area"),
          ("inside a museum", "in a gallery hall", "on display in a museum"),
          ("under a bridge", "beneath an overpass", "below a bridge")]
TIMES = [("", "", ""), ("at night", "after dark", "in the night"), ("at sunset", "at dusk", "as the sun goes down"),
         ("in the rain", "during a rain shower", "on a rainy day")]
FRAMES = ["A {c} {s} {p} {t}.", "Photo of a {c} {s} {p} {t}", "An image showing a {c} {s} {p} {t}.",
          "{C} {s} {p} {t}, close-up shot", "There is a {c} {s} {p} {t} in this picture.",
          "a {c} {s}, {p} {t}", "Stock photo: {c} {s} {p} {t}"]


def paraphrase(scene: tuple[int, int, int, int], base: dict[str, int], rng: np.random.Generator,
               max_swaps: int = 1) -> str:
    """One wording of a scene (subject, colour, place, time indices): the group's own word per
    slot (`base`: slot -> synonym index) with up to `max_swaps` slots swapped for a synonym, in a
    random frame."""
    s, c, p, t = scene
    choice = dict(base)
    for slot in rng.choice(list(choice), size=int(rng.integers(0, max_swaps + 1)), replace=False).tolist():
        choice[slot] = int(rng.integers(3))
    words = {"s": SUBJECTS[s][choice["s"]], "c": COLOURS[c][choice["c"]], "p": PLACES[p][choice["p"]],
             "t": TIMES[t][choice["t"]]}
    text = FRAMES[rng.integers(len(FRAMES))].format(C=words["c"].capitalize(), **words)
    return " ".join(text.replace(" .", ".").replace(" ,", ",").split())


def planted_paraphrases(n_groups: int, seed: int = 0, max_variants: int = 4, max_swaps: int = 1) -> list[Planted]:
    """`n_groups` distinct scenes, each written 1..max_variants ways (a group of one is a record
    with no duplicate). At most len(SUBJECTS) x len(COLOURS) x len(PLACES) x len(TIMES) groups."""
    total = len(SUBJECTS) * len(COLOURS) * len(PLACES) * len(TIMES)
    if n_groups > total:
        raise ValueError(f"at most {total} distinct scenes")
    rng = np.random.default_rng(seed)
    out: list[Planted] = []
    for g, code in enumerate(rng.choice(total, size=n_groups, replace=False).tolist()):
        code, t = divmod(code, len(TIMES))
        code, p = divmod(code, len(PLACES))
        s, c = divmod(code, len(COLOURS))
        seen: set[str] = set()
        base = {slot: int(rng.integers(3)) for slot in "scpt"}
        for _ in range(int(rng.integers(1, max_variants + 1))):
            text = paraphrase((s, c, p, t), base, rng, max_swaps)
            if text not in seen:  # an exact repeat is exact dedup's, not this set's
                seen.add(text)
                out.append(Planted(uid=f"{g:06d}-{len(seen)}", caption=text, group=g))
    return out
