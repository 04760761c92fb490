"""The toy tasks' natural-language variant (`benchmark=natural`), for real instruct LMs.

The embedded toy tasks speak a private language (`add 33 7 =`) that only the tiny base was
pre-trained on. These tasks ask plain questions a small instruct model (SmolLM2-135M-Instruct)
can partly answer, in the paper's prompt format: the question, then its short-answer
instruction, or with CoT its `<think>`/`\\boxed{}` instruction. Answers are one word or one
number, graded by one rule for every paradigm and for rewards and evaluation alike: the
extracted answer (the whole response, or the boxed content with CoT) must equal the reference
after `normalize_phrase` (case, edge punctuation, articles, number words); "Paris." counts,
"The capital of France is Paris." does not.

Three families of generators, disjoint in what they ask:
- CPT tasks (`CPT_GENERATORS`): trained one after another;
- the general suite (`GENERAL_GENERATORS`): held out, never trained;
- format tasks (`FORMAT_GENERATORS`): only for the base model's format-alignment step
  (cpt_bench.builtin.aligned), so the base learns the answer format, not the tasks.
Words and facts are embedded below; nothing is downloaded.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

from cpt_bench.tasks.base import Example, sample_split, stable_seed
from cpt_bench.tasks.grading import normalize_phrase

# the paper's instructions (the authors' ShareGPT files and EasyR1's math_format prompt)
from cpt_bench.tasks.mllm import COT_INSTRUCTION, SHORT_ANSWER

# -> (question, answer, rationale, split key): the key decides train or test (`split_of`), so a
# fact task keeps each fact (a country, a word) on one side whatever the phrasing; None = the question
Generator = Callable[[random.Random], tuple[str, str, str, str | None]]

CAPITALS = {
    "France": "Paris", "Germany": "Berlin", "Italy": "Rome", "Spain": "Madrid", "Portugal": "Lisbon",
    "Japan": "Tokyo", "China": "Beijing", "Russia": "Moscow", "Egypt": "Cairo", "Greece": "Athens",
    "Austria": "Vienna", "Ireland": "Dublin", "Norway": "Oslo", "Sweden": "Stockholm", "Finland": "Helsinki",
    "Denmark": "Copenhagen", "Poland": "Warsaw", "Hungary": "Budapest", "Belgium": "Brussels",
    "Netherlands": "Amsterdam", "Canada": "Ottawa", "Mexico": "Mexico City", "Peru": "Lima", "Chile": "Santiago",
    "Argentina": "Buenos Aires", "Colombia": "Bogota", "Cuba": "Havana", "Kenya": "Nairobi", "Thailand": "Bangkok",
    "Vietnam": "Hanoi", "India": "New Delhi", "Iran": "Tehran", "Iraq": "Baghdad", "Turkey": "Ankara",
    "Ukraine": "Kyiv", "Czechia": "Prague", "Romania": "Bucharest", "Bulgaria": "Sofia", "Serbia": "Belgrade",
    "Croatia": "Zagreb", "Switzerland": "Bern", "Australia": "Canberra", "New Zealand": "Wellington",
    "South Korea": "Seoul", "North Korea": "Pyongyang", "Philippines": "Manila", "Indonesia": "Jakarta",
    "Malaysia": "Kuala Lumpur", "Pakistan": "Islamabad", "Afghanistan": "Kabul", "Saudi Arabia": "Riyadh",
    "Syria": "Damascus", "Lebanon": "Beirut", "Jordan": "Amman", "Israel": "Jerusalem", "Morocco": "Rabat",
    "Algeria": "Algiers", "Tunisia": "Tunis", "Libya": "Tripoli", "Nigeria": "Abuja", "Ghana": "Accra",
    "Ethiopia": "Addis Ababa", "Sudan": "Khartoum", "Uganda": "Kampala", "Venezuela": "Caracas",
    "Ecuador": "Quito", "Bolivia": "La Paz", "Uruguay": "Montevideo", "Paraguay": "Asuncion",
    "Iceland": "Reykjavik", "Estonia": "Tallinn", "Latvia": "Riga", "Lithuania": "Vilnius", "Slovakia": "Bratislava",
    "Slovenia": "Ljubljana", "Albania": "Tirana", "Bangladesh": "Dhaka", "Nepal": "Kathmandu", "Qatar": "Doha",
    "Mongolia": "Ulaanbaatar", "Senegal": "Dakar", "Zimbabwe": "Harare", "Jamaica": "Kingston", "Panama": "Panama City",
    "Brazil": "Brasilia", "United Kingdom": "London", "United States": "Washington", "Cambodia": "Phnom Penh",
    "Sri Lanka": "Colombo", "Armenia": "Yerevan", "Georgia": "Tbilisi", "Belarus": "Minsk", "Moldova": "Chisinau",
    # more countries, so a 64-item test split asks about ~40 countries, not ~17 (one capital each,
    # no diacritics: a capital with two seats or a common second spelling is left out)
    "Angola": "Luanda", "Azerbaijan": "Baku", "Bahrain": "Manama", "Belize": "Belmopan", "Bhutan": "Thimphu",
    "Bosnia and Herzegovina": "Sarajevo", "Botswana": "Gaborone", "Brunei": "Bandar Seri Begawan",
    "Burkina Faso": "Ouagadougou", "Cyprus": "Nicosia", "Dominican Republic": "Santo Domingo",
    "El Salvador": "San Salvador", "Eritrea": "Asmara", "Fiji": "Suva", "Gabon": "Libreville", "Gambia": "Banjul",
    "Guatemala": "Guatemala City", "Guinea": "Conakry", "Guyana": "Georgetown", "Haiti": "Port-au-Prince",
    "Honduras": "Tegucigalpa", "Kazakhstan": "Astana", "Kuwait": "Kuwait City", "Kyrgyzstan": "Bishkek",
    "Laos": "Vientiane", "Lesotho": "Maseru", "Liberia": "Monrovia", "Liechtenstein": "Vaduz",
    "Madagascar": "Antananarivo", "Malawi": "Lilongwe", "Mali": "Bamako", "Malta": "Valletta",
    "Mauritania": "Nouakchott", "Mauritius": "Port Louis", "Montenegro": "Podgorica", "Mozambique": "Maputo",
    "Namibia": "Windhoek", "Nicaragua": "Managua", "Niger": "Niamey", "North Macedonia": "Skopje", "Oman": "Muscat",
    "Papua New Guinea": "Port Moresby", "Rwanda": "Kigali", "Sierra Leone": "Freetown", "Somalia": "Mogadishu",
    "South Sudan": "Juba", "Suriname": "Paramaribo", "Tajikistan": "Dushanbe", "Tanzania": "Dodoma",
    "Trinidad and Tobago": "Port of Spain", "Turkmenistan": "Ashgabat", "United Arab Emirates": "Abu Dhabi",
    "Uzbekistan": "Tashkent", "Zambia": "Lusaka", "Bahamas": "Nassau", "Barbados": "Bridgetown", "Cape Verde": "Praia",
    "Comoros": "Moroni", "Equatorial Guinea": "Malabo", "Samoa": "Apia", "Vanuatu": "Port Vila",
    "Solomon Islands": "Honiara", "East Timor": "Dili", "Seychelles": "Victoria", "Saint Lucia": "Castries",
    "Dominica": "Roseau", "Central African Republic": "Bangui", "Republic of the Congo": "Brazzaville",
    "Democratic Republic of the Congo": "Kinshasa", "Guinea-Bissau": "Bissau", "Marshall Islands": "Majuro",
    "Micronesia": "Palikir", "Tuvalu": "Funafuti",
}

ANTONYMS = {
    "hot": "cold", "big": "small", "fast": "slow", "up": "down", "happy": "sad", "light": "dark", "old": "new",
    "open": "closed", "full": "empty", "hard": "soft", "high": "low", "long": "short", "rich": "poor",
    "strong": "weak", "wet": "dry", "early": "late", "thick": "thin", "loud": "quiet", "clean": "dirty",
    "good": "bad", "young": "old", "heavy": "light", "first": "last", "inside": "outside", "true": "false",
    "win": "lose", "buy": "sell", "push": "pull", "love": "hate", "day": "night", "left": "right", "near": "far",
    "above": "below", "begin": "end", "cheap": "expensive", "alive": "dead", "asleep": "awake", "brave": "cowardly",
    "deep": "shallow", "friend": "enemy", "give": "take", "wide": "narrow", "sharp": "dull", "sweet": "sour",
    "always": "never", "before": "after", "accept": "reject", "arrive": "leave", "remember": "forget",
    "tall": "short", "increase": "decrease", "question": "answer", "north": "south", "east": "west",
    "laugh": "cry", "smooth": "rough", "polite": "rude", "safe": "dangerous", "success": "failure",
    "victory": "defeat", "include": "exclude", "maximum": "minimum", "noisy": "silent", "warm": "cool",
    "wild": "tame", "guilty": "innocent", "visible": "invisible", "possible": "impossible", "correct": "wrong",
    "together": "apart", "top": "bottom", "sunny": "cloudy", "entrance": "exit", "import": "export",
    "lend": "borrow", "sink": "float", "teacher": "student", "king": "queen", "boy": "girl", "man": "woman",
    # more pairs, neither word used above (no pair is asked both ways across the split)
    "ancient": "modern", "backward": "forward", "careful": "careless", "difficult": "easy", "evening": "morning",
    "freeze": "melt", "front": "back", "guest": "host", "hero": "villain", "husband": "wife", "inner": "outer",
    "less": "more", "loose": "tight", "majority": "minority", "male": "female", "few": "many", "odd": "even",
    "past": "future", "peace": "war", "plural": "singular", "positive": "negative", "private": "public",
    "ugly": "beautiful", "vertical": "horizontal", "worst": "best", "yesterday": "tomorrow", "input": "output",
    "arrival": "departure", "dawn": "dusk", "add": "subtract", "multiply": "divide", "absent": "present",
    "foolish": "wise", "attack": "defend", "ascend": "descend", "agree": "disagree", "appear": "disappear",
    "connect": "disconnect", "major": "minor", "encourage": "discourage", "optimist": "pessimist",
    "offense": "defense", "profit": "loss", "rise": "fall", "solid": "liquid", "superior": "inferior",
    "temporary": "permanent", "whole": "part", "winter": "summer", "sunrise": "sunset", "mother": "father",
    "sister": "brother", "uncle": "aunt", "son": "daughter", "black": "white", "obey": "disobey", "birth": "death",
    "knowledge": "ignorance", "flexible": "rigid", "cause": "effect", "send": "receive", "teach": "learn",
    "exterior": "interior",
}

WORDS = ["apple", "garden", "river", "pencil", "window", "orange", "tiger", "mountain", "yellow", "basket",
         "kitchen", "dragon", "planet", "violin", "rabbit", "summer", "forest", "candle", "silver", "island",
         "jacket", "lemon", "monkey", "number", "ocean", "purple", "quiet", "rocket", "school", "table",
         "umbrella", "village", "winter", "zebra", "bottle", "castle", "doctor", "engine", "flower", "guitar",
         "hammer", "igloo", "jungle", "kettle", "ladder", "market", "needle", "pepper", "rubber", "sugar",
         "tomato", "valley", "wallet", "yogurt", "anchor", "button", "circle", "desert", "feather", "ginger"]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December"]


# --- CPT tasks -------------------------------------------------------------------------------


Item = tuple[str, str, str, str | None]


def _add(rng: random.Random) -> Item:
    a, b = rng.randint(1, 20), rng.randint(1, 20)
    return f"What is {a} + {b}?", str(a + b), f"{a} + {b} = {a + b}.", None


def _capital(rng: random.Random) -> Item:
    country = rng.choice(sorted(CAPITALS))
    city = CAPITALS[country]
    question = rng.choice(["What is the capital of {}?", "Which city is the capital of {}?",
                           "Name the capital city of {}."]).format(country)
    return question, city, f"The capital of {country} is {city}.", country


def _largest(rng: random.Random) -> Item:
    xs = rng.sample(range(1, 100), 4)
    listed = ", ".join(map(str, xs))
    return (f"Which is the largest of these numbers: {listed}?", str(max(xs)),
            f"The largest of {listed} is {max(xs)}.", None)


def _antonym(rng: random.Random) -> Item:
    word = rng.choice(sorted(ANTONYMS))
    question = rng.choice(["What is the opposite of the word '{}'?", "What is the opposite of '{}'?",
                           "Give the antonym of '{}'."]).format(word)
    return question, ANTONYMS[word], f"The opposite of {word} is {ANTONYMS[word]}.", word


def _sub(rng: random.Random) -> Item:
    a = rng.randint(5, 30)
    b = rng.randint(1, a)
    return f"What is {a} - {b}?", str(a - b), f"{a} - {b} = {a - b}.", None


# --- the general suite -----------------------------------------------------------------------


def _successor(rng: random.Random) -> Item:
    n = rng.randint(1, 998)
    return f"What number comes right after {n}?", str(n + 1), f"{n} + 1 = {n + 1}.", None


def _first_letter(rng: random.Random) -> Item:
    word = rng.choice(WORDS)
    question = rng.choice(["What is the first letter of the word '{}'?", "Which letter does '{}' start with?",
                           "What letter does the word '{}' begin with?"]).format(word)
    return question, word[0], f"'{word}' starts with {word[0]}.", None


def _smaller(rng: random.Random) -> Item:
    a, b = rng.sample(range(1, 1000), 2)
    return f"Which number is smaller, {a} or {b}?", str(min(a, b)), f"{min(a, b)} is less than {max(a, b)}.", None


# --- format tasks (the base model's alignment step only) -------------------------------------


def _double(rng: random.Random) -> Item:
    n = rng.randint(1, 50)
    return f"What is twice {n}?", str(2 * n), f"2 * {n} = {2 * n}.", None


def _letters(rng: random.Random) -> Item:
    word = rng.choice(WORDS)
    return f"How many letters does the word '{word}' have?", str(len(word)), f"'{word}' has {len(word)} letters.", None


def _next_day(rng: random.Random) -> Item:
    i = rng.randrange(7)
    day, nxt = DAYS[i], DAYS[(i + 1) % 7]
    return f"Which day of the week comes after {day}?", nxt, f"After {day} comes {nxt}.", None


def _next_month(rng: random.Random) -> Item:
    i = rng.randrange(12)
    month, nxt = MONTHS[i], MONTHS[(i + 1) % 12]
    return f"Which month comes after {month}?", nxt, f"After {month} comes {nxt}.", None


def _last_word(rng: random.Random) -> Item:
    words = rng.sample(WORDS, 3)
    return (f"What is the last word in this list: {', '.join(words)}?", words[-1],
            f"The list ends with {words[-1]}.", None)


CPT_GENERATORS: dict[str, Generator] = {"add": _add, "capital": _capital, "largest": _largest,
                                        "antonym": _antonym, "sub": _sub}
GENERAL_GENERATORS: dict[str, Generator] = {"successor": _successor, "first_letter": _first_letter,
                                            "smaller": _smaller}
FORMAT_GENERATORS: dict[str, Generator] = {"double": _double, "letters": _letters, "next_day": _next_day,
                                           "next_month": _next_month, "last_word": _last_word}


def grade_phrase(given: str, answer: str) -> float:
    """1.0 when the extracted answer is the reference up to case, edge punctuation and articles."""
    return float(normalize_phrase(given) == normalize_phrase(answer))


@dataclass
class NaturalTask:
    """A natural-language task: deterministic disjoint splits from a generator."""

    name: str
    generator: Generator
    seed: int = 0
    train_size: int = 128
    test_size: int = 50
    chance: ClassVar[float | None] = None  # free-form answers (`Task.chance`)

    def _sample(self, split: str, n: int, stream: str, unique: bool = True) -> list[Example]:
        rng = random.Random(stable_seed("natural", self.name, stream, self.seed))

        def make(r: random.Random) -> Example:
            question, answer, rationale, key = self.generator(r)
            return Example(self.name, question, answer, rationale, {"split_key": key or question})

        return sample_split(make, rng, n, split=split, task=self.name, unique=unique,
                            split_key=lambda ex: ex.meta["split_key"])

    def train(self) -> list[Example]:
        return self._sample("train", self.train_size, "train")

    def test(self) -> list[Example]:
        return self._sample("test", self.test_size, "test")

    def items(self, n: int, stream: str) -> list[Example]:
        """Items from the train split on a stream of their own, repeats allowed (format alignment)."""
        return self._sample("train", n, stream, unique=False)

    def grade(self, answer: str | None, example: Example) -> float:
        return 0.0 if answer is None else grade_phrase(answer, example.answer)


def natural_tasks(seed: int = 0, train_size: int = 128, test_size: int = 50,
                  generators: dict[str, Generator] | None = None) -> dict[str, NaturalTask]:
    """The CPT tasks and the general suite (or the given generators) keyed by name."""
    gens = generators if generators is not None else {**CPT_GENERATORS, **GENERAL_GENERATORS}
    return {name: NaturalTask(name, gen, seed, train_size, test_size) for name, gen in gens.items()}


__all__ = ["COT_INSTRUCTION", "CPT_GENERATORS", "FORMAT_GENERATORS", "GENERAL_GENERATORS", "SHORT_ANSWER",
           "NaturalTask", "grade_phrase", "natural_tasks"]
