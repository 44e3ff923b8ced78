"""A seeded, labelled probe set for measuring a text rater before it may reject data: clean
captions and OCR-like texts (signs, menus, headlines, names) in several languages, and degraded
copies of them - repeated n-grams, word salad, boilerplate, truncation, keyboard noise and
encoding garbage. Same seed and size, same probes, on every machine (only `random.Random`)."""

from __future__ import annotations

import random
from dataclasses import dataclass

from curation.annotate.quality import ScoreInput

PROBE_VERSION = 1  # bump when the generator changes: calibration caches are keyed on it
DEGRADATIONS = ("repeated_ngrams", "word_salad", "boilerplate", "truncation", "keyboard_noise", "encoding_garbage")
OCR_CAPTION = {"en": "A photo of a sign with text.", "de": "Ein Foto eines Schildes mit Text.",
               "fr": "Une photo d'un panneau avec du texte.", "es": "Una foto de un cartel con texto.",
               "zh": "一张带有文字的标牌照片。"}

_WORDS = {
    "en": {"subj": ["A golden retriever", "An old man", "A red double-decker bus", "Two children", "A plate of pasta",
                    "A wooden sailboat", "A young woman", "A grey cat", "A steam locomotive", "A bowl of ramen"],
           "verb": ["rests", "waits", "stands", "sits", "is shown", "is parked", "appears"],
           "place": ["on a blue sofa", "next to a brick wall", "in a sunny park", "at a busy train station",
                     "on a wooden table", "beside a quiet lake", "under a cloudy sky", "in a small kitchen"],
           "extra": ["in the afternoon light", "during the winter", "with mountains behind", "near a striped cushion"],
           "head": ["Council approves new bike lanes", "Storm closes coastal roads", "Local team wins the cup final",
                    "Museum reopens after renovation", "Prices rise for the third month"],
           "name": ["Kane and Gretzka celebrate", "Marie Curie in her laboratory", "Portrait of Frida Kahlo",
                    "Serena Williams at Wimbledon", "Nelson Mandela in 1994"],
           "sign": ["GRAND OPENING\nSaturday 10 AM", "NO PARKING\nTow-away zone", "Fresh coffee\nOpen daily 7-19",
                    "EXIT\nEmergency use only", "Platform 4\nTrains to Oxford", "SALE 30% OFF\nAll winter coats"],
           "menu": ["Tomato soup 4.50\nGreen salad 5.00\nApple pie 3.20", "Espresso 2.10\nCappuccino 3.00\nTea 2.40",
                    "Room 101 Reception\nRoom 102 Library\nRoom 103 Office"]},
    "de": {"subj": ["Ein brauner Hund", "Eine alte Frau", "Ein gelber Bus", "Zwei Kinder", "Ein Teller Suppe",
                    "Ein kleines Boot", "Ein junger Mann", "Eine schwarze Katze"],
           "verb": ["liegt", "wartet", "steht", "sitzt", "ist zu sehen"],
           "place": ["auf einem roten Sofa", "vor einer alten Mauer", "in einem sonnigen Park", "am Bahnhof",
                     "auf einem Holztisch", "an einem ruhigen See"],
           "extra": ["im Abendlicht", "im Winter", "mit Bergen im Hintergrund"],
           "head": ["Stadtrat beschliesst neue Radwege", "Sturm sperrt Kuestenstrassen", "Museum nach Umbau wieder offen"],
           "name": ["Portraet von Albert Einstein", "Angela Merkel in Berlin", "Thomas Mueller jubelt"],
           "sign": ["Ausgang\nNur im Notfall", "Geoeffnet\nMo-Fr 8-18 Uhr", "Bahnhof\nGleis 3"],
           "menu": ["Kaffee 2,50\nKuchen 3,20\nTee 2,00", "Suppe des Tages 4,90\nSalat 5,50"]},
    "fr": {"subj": ["Un chien brun", "Une vieille femme", "Un bus jaune", "Deux enfants", "Une assiette de soupe",
                    "Un petit bateau", "Un jeune homme", "Un chat noir"],
           "verb": ["attend", "se repose", "est assis", "est visible"],
           "place": ["sur un canape rouge", "devant un vieux mur", "dans un parc ensoleille", "a la gare",
                     "sur une table en bois", "au bord d'un lac"],
           "extra": ["le soir", "en hiver", "avec des montagnes au loin"],
           "head": ["La mairie approuve de nouvelles pistes cyclables", "Une tempete ferme les routes cotieres"],
           "name": ["Portrait de Victor Hugo", "Zinedine Zidane celebre", "Edith Piaf sur scene"],
           "sign": ["Sortie\nUrgence uniquement", "Ouvert\nLun-Ven 8h-18h", "Boulangerie\nPain frais"],
           "menu": ["Cafe 2,50\nCroissant 1,80\nThe 2,00", "Soupe du jour 4,90\nSalade 5,50"]},
    "es": {"subj": ["Un perro marron", "Una mujer mayor", "Un autobus amarillo", "Dos ninos", "Un plato de sopa",
                    "Un barco pequeno", "Un hombre joven", "Un gato negro"],
           "verb": ["espera", "descansa", "esta sentado", "aparece"],
           "place": ["en un sofa rojo", "frente a un muro viejo", "en un parque soleado", "en la estacion",
                     "sobre una mesa de madera", "junto a un lago"],
           "extra": ["por la tarde", "en invierno", "con montanas al fondo"],
           "head": ["El ayuntamiento aprueba nuevos carriles bici", "Una tormenta cierra las carreteras"],
           "name": ["Retrato de Frida Kahlo", "Rafael Nadal celebra", "Pablo Picasso en su taller"],
           "sign": ["Salida\nSolo emergencias", "Abierto\nLun-Vie 8-18", "Farmacia\nDe guardia"],
           "menu": ["Cafe 1,50\nTostada 2,20\nZumo 2,80", "Sopa del dia 4,90\nEnsalada 5,50"]},
    "zh": {"subj": ["一只金毛犬", "一位老人", "一辆红色公交车", "两个孩子", "一盘意大利面", "一只灰猫"],
           "verb": ["躺在", "坐在", "停在", "站在"],
           "place": ["蓝色沙发上", "砖墙旁边", "阳光明媚的公园里", "繁忙的火车站", "木桌上", "安静的湖边"],
           "extra": ["，午后阳光明媚", "，冬天的早晨", "，背景是群山"],
           "head": ["市议会批准新建自行车道", "暴风雨关闭沿海公路", "博物馆翻新后重新开放"],
           "name": ["鲁迅肖像", "姚明在比赛中", "李娜赢得冠军"],
           "sign": ["盛大开业\n周六上午十点", "禁止停车", "出口\n紧急使用", "新鲜咖啡\n每日营业"],
           "menu": ["番茄汤 12元\n蔬菜沙拉 15元\n苹果派 10元", "咖啡 18元\n茶 12元"]},
}
_BOILERPLATE = ["Click here to subscribe to our newsletter", "All rights reserved. Privacy Policy | Terms of Use",
                "Add to cart | Free shipping on orders over $50", "Lorem ipsum dolor sit amet, consectetur adipiscing elit",
                "IMG_2031.JPG", "Cookie settings Accept all Reject all", "Sponsored content - learn more",
                "Image may contain: 1 person, outdoor", "stock photo royalty free download", "Page 1 of 12 Next >>"]
_KEYBOARD = "qwertyuiopasdfghjklzxcvbnm1234567890;,./[]"
_MOJIBAKE = ["Ã©", "Ã¼", "â€™", "â€œ", "Ã¤", "\ufffd", "Ã", "Â", "ï»¿", "Ð"]


@dataclass(frozen=True, slots=True)
class Probe:
    """One labelled text: clean, or a degraded copy of a clean text (`kind` says how)."""

    id: str
    text: str
    lang: str
    domain: str  # "caption" (the text is the caption) or "ocr" (the text is what OCR read)
    kind: str  # "clean" or one of DEGRADATIONS
    clean: bool

    def score_input(self) -> ScoreInput:
        if self.domain == "ocr":
            return ScoreInput(caption=OCR_CAPTION[self.lang], ocr_text=self.text, ocr_chars=len(self.text))
        return ScoreInput(caption=self.text)


def _caption(rng: random.Random, lang: str) -> str:
    w = _WORDS[lang]
    style = rng.random()
    if style < 0.25:
        return rng.choice(w["head"])
    if style < 0.4:
        return rng.choice(w["name"])
    if lang == "zh":
        return f"{rng.choice(w['subj'])}{rng.choice(w['verb'])}{rng.choice(w['place'])}{rng.choice(w['extra'])}。"
    parts = [rng.choice(w["subj"]), rng.choice(w["verb"]), rng.choice(w["place"])]
    if rng.random() < 0.6:
        parts.append(rng.choice(w["extra"]))
    return " ".join(parts) + "."


def _ocr_text(rng: random.Random, lang: str) -> str:
    return rng.choice(_WORDS[lang]["sign" if rng.random() < 0.6 else "menu"])


def _tokens(text: str, lang: str) -> list[str]:
    return list(text.replace("\n", "")) if lang == "zh" else text.split()


def _join(tokens: list[str], lang: str) -> str:
    return "".join(tokens) if lang == "zh" else " ".join(tokens)


def degrade(text: str, lang: str, kind: str, rng: random.Random) -> str:
    """A degraded copy of `text` (seeded by `rng`)."""
    toks = _tokens(text, lang) or [text]
    if kind == "repeated_ngrams":
        n = min(len(toks), rng.randint(1, 3))
        start = rng.randrange(len(toks) - n + 1)
        return _join(toks[start:start + n] * rng.randint(6, 10), lang)
    if kind == "word_salad":
        pool = toks + _tokens(_caption(rng, rng.choice(list(_WORDS))), lang)
        rng.shuffle(pool)
        return _join(pool[:max(6, len(toks))], lang).lower()
    if kind == "boilerplate":
        return " | ".join(rng.sample(_BOILERPLATE, rng.randint(1, 3)))
    if kind == "truncation":
        cut = max(2, int(len(text) * rng.uniform(0.15, 0.35)))
        return text[:cut].rstrip()
    if kind == "keyboard_noise":
        return " ".join("".join(rng.choice(_KEYBOARD) for _ in range(rng.randint(2, 7))) for _ in range(rng.randint(3, 8)))
    if kind == "encoding_garbage":
        broken = text.encode("utf-8").decode("latin-1")  # UTF-8 read as Latin-1: mojibake for non-ASCII text
        chars = list(broken)
        for _ in range(max(3, len(chars) // 4)):
            chars.insert(rng.randrange(len(chars) + 1), rng.choice(_MOJIBAKE))
        return "".join(chars)
    raise ValueError(f"unknown degradation {kind!r} (expected one of {', '.join(DEGRADATIONS)})")


def probe_set(n: int = 300, seed: int = 0) -> list[Probe]:
    """`n` probes: half clean, half degraded copies of clean texts cycling through every
    degradation; a third OCR-like texts, the rest captions; languages in turn."""
    rng = random.Random(f"curate-probes-{PROBE_VERSION}-{seed}")
    langs = sorted(_WORDS)
    out: list[Probe] = []
    for i in range(n):
        j = i // 2  # a clean probe and a degraded one per step; 6 steps a block, every third block OCR
        lang = langs[j % len(langs)]
        domain = "ocr" if (j // len(DEGRADATIONS)) % 3 == 1 else "caption"
        text = _ocr_text(rng, lang) if domain == "ocr" else _caption(rng, lang)
        if i % 2 == 0:
            out.append(Probe(f"p{i:04d}", text, lang, domain, "clean", True))
        else:
            kind = DEGRADATIONS[j % len(DEGRADATIONS)]
            out.append(Probe(f"p{i:04d}", degrade(text, lang, kind, rng), lang, domain, kind, False))
    return out
