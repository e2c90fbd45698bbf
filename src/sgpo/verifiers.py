"""Ready-made verifiers, each ``(response, reference) -> float`` in [0, 1], for use as
``task.verifier: "sgpo.verifiers:NAME"``.

- math_verify: mathematical equivalence with the ``math-verify`` package (fractions vs decimals,
  LaTeX vs plain text, "1,000" vs "1000", "$18" / "18 dollars" vs "18").
- exact_match: the whole response equals the reference after whitespace normalisation.
- numeric: the last number in the response's final answer (below) equals the reference within
  rel_tol / abs_tol.
- multiple_choice: the chosen letter (A-E) equals the reference letter.

The final answer of a free-form response is read from what follows its last ``</think>`` (a
reasoning model's answer follows its thinking; a response whose ``<think>`` never closes was cut
off while reasoning and has no answer) and is, in this order: the content of its last
``\\boxed{...}`` (none when that last box never closes: cut off inside its answer), the text
after its last "####" that marks an answer (a Markdown heading, a word of two or more letters
after it, does not count), the text after its last "answer is" or "answer:"; with none of these
the whole response is handed to math-verify, which picks its last expression.

Timeouts: math-verify's own timeouts use ``signal.alarm``, which (a) cancels the ITIMER_REAL timer
that sgpo.verify.Verifier arms around an inline call, (b) has whole-second resolution and (c) makes
math-verify silently return "no answer" off the main thread. They are switched off here
(``parsing_timeout=None``, ``timeout_seconds=None``): the Verifier that runs these functions is
what bounds their time. Called directly, outside a Verifier, they have no time limit.
"""

from __future__ import annotations

import math
import re
import unicodedata
from decimal import Decimal
from fractions import Fraction

import math_verify as mv
import math_verify.grader
import math_verify.parser
import sympy

from sgpo.verify import BadReference, VerifierTimeout

# Imported with this module, outside any verifier timeout: a first import cut short by one
# leaves a half-built sympy behind. Their "timeout is disabled, provide your own" warning is
# switched off: sgpo.verify.Verifier provides it.
math_verify.parser.TIMEOUT_WARNING_SHOWN = True
math_verify.grader.TIMEOUT_WARNING_SHOWN = True

# --------------------------------------------------------------------------- answer extraction

# "\\boxed{...}", or the unbraced "\\boxed 5" some MATH solutions write (read up to "$" or the
# line's end, as the MATH benchmark's own answer extraction does): after a space, and not a
# word, so prose that names \\boxed ("put it in \\boxed format") is no box
BOXED = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])\s*")
_UNBRACED = re.compile(r"(?<=\s)(?![^\W\d_]{2,})[^\s$][^$\n]*")
# "the answer is 18", "The final answer is: 18"; opening a line, "Final Answer: 18", a bold
# "**Answer:** 18", and a plain "Answer:" (or "#### Answer:") before a number or math. A
# few-shot "Answer: Let's think..." opening the working, or "check the answer: ..." in prose,
# marks none.
_ANSWER_IS = re.compile(
    r"answer\s+is\b\s*:?"
    r"|^[ \t>#]*(?:\*\*|__)?[ \t]*final\s+answer[ \t]*(?:\*\*|__)?[ \t]*:"
    r"|^[ \t>#]*(?:\*\*|__)[ \t]*answer[ \t]*(?:\*\*|__)?[ \t]*:"
    r"|^[ \t>#]*answer[ \t]*:(?=[ \t*_]*[-+$\\(\d])",
    re.IGNORECASE | re.MULTILINE,
)
_MARKDOWN = re.compile(r"^[*_`\s]+|[*_`\s]+$")
# What follows "####" in a Markdown heading ("#### Step 2: add", "#### Solution"): a word of
# two or more letters. An answer ("42", "x = 5", "-5", "{2, 3}", "\\pi/2") starts otherwise.
_HEADING = re.compile(r"[^\W\d_]{2,}")


def boxed_contents(text: str) -> list[str | None]:
    """Contents of the text's ``\\boxed{...}`` (or ``\\fbox{...}``, or unbraced ``\\boxed 5``) in
    order, nested braces handled, None for one never closed. Escaped braces ``\\{`` ``\\}`` do
    not count; a ``\\boxed`` with nothing after it is not a box."""
    contents: list[str | None] = []
    closing: dict[int, int] | None = None  # read once, where a box opens a brace
    for match in BOXED.finditer(text):
        start = match.end()
        if text.startswith("{", start):
            closing = _closing_braces(text) if closing is None else closing
            end = closing.get(start)
            contents.append(None if end is None else text[start + 1 : end])
        elif unbraced := _UNBRACED.match(text, start):
            contents.append(unbraced.group().strip())
    return contents


def _closing_braces(text: str) -> dict[int, int]:
    """Where each "{" of text that is closed closes, escaped braces not counted: one pass (a scan
    from every box of a response with thousands of nested boxes took time quadratic in its
    length)."""
    closing: dict[int, int] = {}
    opened: list[int] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            i += 2
            continue
        if ch == "{":
            opened.append(i)
        elif ch == "}" and opened:
            closing[opened.pop()] = i
        i += 1
    return closing


def last_boxed(text: str) -> str | None:
    """Content of the last closed box (see boxed_contents); None when there is none."""
    return next((c for c in reversed(boxed_contents(text)) if c is not None), None)


def _first_line(text: str) -> str:
    return text.strip().split("\n", 1)[0].strip()


def answer_part(response: str) -> str | None:
    """The part of a response that holds its final answer: what follows its last </think> (a
    reasoning model's answer follows its thinking; an answer inside the thinking is a draft);
    None when a <think> never closes (cut off while reasoning: no answer yet)."""
    _, closed, after = response.rpartition("</think>")
    if closed:
        return after
    return None if "<think>" in response else response


def opens_thinking(prompt: str) -> bool:
    """Whether a rendered prompt ends inside a <think> it opened (DeepSeek-R1-Distill's and
    QwQ's chat templates open the thinking for the model): its responses start thinking."""
    return prompt.rfind("<think>") > prompt.rfind("</think>")


def begun_in_thinking(response: str, prompt_opened_it: bool) -> str:
    """The response as a verifier reads it: with the <think> its prompt opened, so one cut off
    before its </think> has no answer yet (answer_part) instead of one read from its draft."""
    return "<think>" + response if prompt_opened_it else response


def final_answer(response: str) -> tuple[str, str]:
    """(kind, text) of the response's final answer; kind is boxed, hashes, answer-is, whole, or
    none (no answer: cut off while reasoning or inside its last box)."""
    part = answer_part(response)
    boxes = boxed_contents(part or "")
    if part is None or (boxes and boxes[-1] is None):
        return "none", ""
    response = part
    boxed = last_boxed(response)
    if boxed is not None:
        return "boxed", boxed.strip()
    # GSM8K's "#### 42"; a Markdown heading ("#### Step 2: add") is not an answer marker
    marked = [_first_line(part) for part in response.split("####")[1:]]
    answers = [text for text in marked if text and not _HEADING.match(text)]
    if answers:
        return "hashes", answers[-1]
    matches = list(_ANSWER_IS.finditer(response))
    if matches:
        clause = _answer_clause(_first_line(response[matches[-1].end() :])).strip()
        # "the answer is not 42", "41 (or 42)": no answer given, or two
        return "answer-is", "" if _NO_ANSWER.match(clause) else clause
    return "whole", response


# An "answer is" clause that names no one answer: negated, or hedged in brackets
_NO_ANSWER = re.compile(r"not\b|[^()]*\(\s*(?:or|maybe|perhaps|possibly)\b", re.IGNORECASE)
# Where an "answer is" clause ends: a full stop before a space or the end, or a comma before a
# word ("18, as shown above"; "1,000" and "(3, 4)" go on).
_CLAUSE_END = re.compile(r"\.(?:\s|$)|;|,\s+(?=[A-Za-z])")
# A comma before these goes on with the answer: "18, or maybe 20" is a hedge, not 18.
_HEDGE = re.compile(r"(?:or|although|though|but|maybe|perhaps|possibly|not)\b", re.IGNORECASE)
# Math in a sentence: "$...$" or "\\(...\\)". A "$...$" pair whose body is a number and then
# words ("$18 and $") is two currency signs, not math.
_MATH_SPAN = re.compile(r"(?<!\\)\$(?P<body>[^$\n]*?)(?<!\\)\$|\\\(.*?\\\)")
_CURRENCY_BODY = re.compile(r"\s*\d[^A-Za-z]*?\s[A-Za-z]")


def _answer_clause(tail: str) -> str:
    """tail up to the end of its first clause outside math and brackets (one pass)."""
    masked = _MATH_SPAN.sub(
        lambda m: m[0] if _CURRENCY_BODY.match(m["body"] or "x") else "#" * len(m[0]), tail
    )
    depth = 0
    for i, char in enumerate(masked):
        if char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        elif char in ".;," and depth <= 0:
            end = _CLAUSE_END.match(masked, i)
            if end and not (char == "," and _HEDGE.match(masked, end.end())):
                return tail[:i]
    return tail


# "1,000", "x = 12,500": a number with thousands separators (inside brackets they separate the
# coordinates of a point or the ends of an interval, "(0,100)", "[5,100]", and stay)
_THOUSANDS = re.compile(r"(?<![\d.,])\d{1,3}(?:,\d{3})+(?:\.\d+)?(?![\d,])")


def drop_thousands_separators(text: str) -> str:
    """text with the commas of its numbers' thousands separators dropped ("1,000" -> "1000"),
    where other commas stay: "(2,3)", "{1,5}", "2, 3"."""
    out, last = [], 0
    for match in _THOUSANDS.finditer(text):
        before = text[: match.start()]
        depth = sum(before.count(c) for c in "([{") - sum(before.count(c) for c in ")]}")
        if depth <= 0:
            out += [text[last : match.start()], match.group(0).replace(",", "")]
            last = match.end()
    return "".join(out) + text[last:]


# "$18", "\$18", "18 dollars", "18.5 cm", "-3 apples", "5kg", "3/4 cups": a plain number (or
# fraction) with a currency sign in front and/or unit words behind. Unit words stand apart
# from the number; attached, only a few common units count, since "6i", "2x" or "5e" are not a
# number with a unit.
_NUMBER_WITH_UNITS = re.compile(
    r"^(?:\\?\$)?\s*(?P<number>[-+]?\d+(?:\.\d+)?(?:/\d+)?)"
    r"(?:\s+(?P<words>[A-Za-z][A-Za-z .'/-]*)|(?:cm|mm|km|kg|mg|lbs?|oz|ft|mph|hrs?|mins?))?$"
)
# Words after a number that make it an expression or change its value, not a unit: "4 pi",
# "3 thousand", "2 squared", "3 halves".
_VALUE_WORDS = frozenset(
    {"pi", "sqrt", "log", "ln", "sin", "cos", "tan", "exp"}
    | {"hundred", "hundreds", "thousand", "thousands", "million", "millions", "billion"}
    | {"billions", "trillion", "trillions", "dozen", "dozens", "score", "gross"}
    | {"half", "halves", "third", "thirds", "quarter", "quarters", "fourths", "fifths"}
    | {"squared", "cubed", "times", "plus", "minus", "over", "divided", "percent"}
)
# Of those, the words that change a number's value whatever is counted ("3 \\text{ dozen}" is
# 36, "3 \\text{ halves}" 1.5), where "5 \\text{ quarters}" or "2 \\text{ times}" may count
# coins or repetitions
_MULTIPLIERS = _VALUE_WORDS - {"score", "quarter", "quarters", "times"}


# A short answer's math delimiters ("$72$ clips", "\\(72\\)"); an escaped \\$ is currency
_DELIMITED = re.compile(r"(?<!\\)\$([^$]+)(?<!\\)\$|\\\((.+?)\\\)")
# LaTeX spacing ("\\,", "\\!", "~"), and a thousands separator written with it ("1\\,000")
_LATEX_SPACE = re.compile(r"\\[,;:! ]|~")
_LATEX_THOUSANDS = re.compile(r"(?<=\d)\\,(?=\d{3}(?!\d))")
# words set in LaTeX: "72~\\text{clips}", "\\text{72 clips}", "5\\mbox{ cm}"
_LATEX_WORDS = re.compile(r"\\(?:text|mbox|mathrm)\s*\{([^{}]*)\}")
# degrees after a number, as a unit: "25°", "25 °C", "25^\\circ C" (math-verify reads the "C" of
# "25^\\circ C" as a variable, and "°" not at all)
_DEGREE_SIGN = re.compile(r"\s*(?:°|\^\s*\{?\s*\\circ\s*\}?)")


def normalize_answer(text: str) -> str:
    """A short final-answer string made friendly to math-verify: markdown, math delimiters and
    a trailing full stop removed, vulgar fractions written as a/b, thousands separators
    dropped, a plain number stripped of currency and units (written in words or in LaTeX's
    \\text)."""
    text = _MARKDOWN.sub("", text.strip())
    text = text.rstrip(".").strip()
    text = _DELIMITED.sub(lambda m: m[1] or m[2], text)
    text = drop_thousands_separators(_LATEX_THOUSANDS.sub("", text))
    # "1½" as "3/2": math-verify reads no vulgar fraction
    text = _VULGAR_FRACTION.sub(_vulgar_as_fraction, text).strip()
    spelled = " ".join(_LATEX_WORDS.sub(r" \1 ", _LATEX_SPACE.sub(" ", text)).split())
    match = _NUMBER_WITH_UNITS.match(_DEGREE_SIGN.sub(" degrees ", spelled).strip())
    if match is None:
        return text
    words = match.group("words")
    first = words.split()[0].lower() if words else ""
    if words and first in _VALUE_WORDS:
        if first not in _MULTIPLIERS and _LATEX_WORDS.search(text):
            return match.group("number")  # "5 \\text{ quarters}": five coins, counted
        # "3 \\text{ dozen}" as "3 dozen": math-verify drops \\text{} and would read 3
        return spelled
    # a letter is a variable, not a unit ("6i", "2 x"); after a fraction two are ("1/2 xy")
    if words and len(first) < (3 if "/" in match.group("number") else 2):
        return text
    return match.group("number")


def _vulgar_as_fraction(match: re.Match[str]) -> str:
    """_plain_vulgar_fraction where the fraction stands alone or ends a whole number; one glued
    to a decimal ("1.5½") is left as written, no number."""
    before = match.string[match.start() - 1 : match.start()]
    if match["whole"] is None and before and before in "0123456789.,":
        return match[0]
    return _plain_vulgar_fraction(match)


# --------------------------------------------------------------------------- math_verify


def _parse(text: str) -> list:
    """math-verify parse without its signal-based timeout; a parse failure means no answer, but a
    timeout raised by the surrounding Verifier is let through."""
    try:
        return mv.parse(text, parsing_timeout=None, raise_on_error=True)
    except VerifierTimeout:
        raise
    except Exception:  # noqa: BLE001 - unparsable text is a wrong answer, not an error
        return []


def _parse_answer(text: str) -> list:
    """Parse a short final answer (a reference, or what a response boxed / put after ####)."""
    normalized = normalize_answer(text)
    if not normalized:
        return []
    parsed = _parse(f"\\boxed{{{normalized}}}")
    return parsed or _parse(normalized)


def _equivalent(gold: list, answer: list) -> bool:
    for g in gold:
        for a in answer:
            try:
                if mv.verify(g, a, timeout_seconds=None, raise_on_error=True):
                    return True
            except VerifierTimeout:
                raise
            except Exception:  # noqa: BLE001, S112 - this pair is not comparable; try the next
                continue
    return False


# LaTeX whose braces hold words rather than mathematics: \text{east}, \mathrm{Cl}, \mbox{ cm},
# \begin{pmatrix}
_TEXT_GROUP = re.compile(r"\\(?:text\w*|mathrm|mbox|operatorname|begin|end)\s*\{[^{}]*\}")
_LATEX_COMMAND = re.compile(r"\\[A-Za-z]+")
_WORD = re.compile(r"[A-Za-z]{3,}")


# Words that separate answers ("2 and 3", "x = -2 or x = 3"), not words of a sentence
ANSWER_SEPARATORS = ("and", "or")


def math_reference(reference: str) -> str:
    """The reference as math_verify reads it; BadReference (a data error) when it holds
    nothing to read ("}") or words outside \\text{} rather than mathematics ("east", "yes",
    "see solution", "The answer is 72"), which math-verify reads as a product of their letters
    (E*a*s*t), so that only a response spelling the same letters in any order would score. A
    run of letters beside mathematics is a product of variables ("2abc", "\\frac{1}{xyz}"),
    and "and" / "or" separate answers ("2 and 3"); a reference math-verify cannot parse
    (0.\\overline{36}) is compared as text."""
    normalized = normalize_answer(reference)
    if not re.search(r"[A-Za-z0-9]", normalized):
        raise BadReference(f"reference {reference!r} holds no answer")
    mathematics = _TEXT_GROUP.sub(" ", normalized)
    bare = _LATEX_COMMAND.sub(" ", mathematics)
    words = [w for w in _WORD.findall(bare) if w.lower() not in ANSWER_SEPARATORS]
    beside = _LATEX_COMMAND.search(mathematics) or re.search(r"[A-Za-z0-9]", _WORD.sub(" ", bare))
    if len(words) > 1 or (words and not beside):
        raise BadReference(
            f"reference {reference!r}: math-verify reads the word {words[0]!r} as a product "
            "of its letters; write a word answer as \\text{...} (compared as text)"
        )
    return normalized


# a percentage: "7.5%", "12.5\\%"
_PERCENTAGE = re.compile(r"^([-+]?\d+(?:\.\d+)?)\s*\\?%$")


def _percent_dropped(text: str) -> str | None:
    """A percentage's number ("7.5\\%" -> "7.5"); None for any other answer."""
    match = _PERCENTAGE.match(normalize_answer(text))
    return match[1] if match else None


def math_verify(response: str, reference: str) -> float:
    """1.0 when the response's final answer is mathematically equivalent to the reference."""
    score = _math_verify(response, reference)
    if score == 0.0:
        # math-verify holds 9% equal to 9 (and to 0.09), but 7.5% only to 0.075: a decimal
        # percentage's number counts too, as an integer's does
        kind, text = final_answer(response)
        marked = kind != "whole" or _bare_answer(text)
        dropped = _percent_dropped(reference), _percent_dropped(text) if marked else None
        if any(dropped):  # read again as any answer is: "9 \\times 2" is no 18%
            answer = f"\\boxed{{{dropped[1]}}}" if dropped[1] else response
            score = _math_verify(answer, dropped[0] or reference)
    return score


def _math_verify(response: str, reference: str) -> float:
    gold = _parse_answer(reference)
    kind, text = final_answer(response)
    if kind != "whole" and _to_float(normalize_answer(reference)) is not None:
        # a number asked for: "18 cm^2" is 18 with a squared unit (as in \text{ cm}^2), not
        # 18 times a variable squared; "18 x^2" keeps its power (not a unit)
        text = _UNIT_POWER.sub(r"\1", text)
    answer = _parse(text) if kind == "whole" else _parse_answer(text)
    if kind == "whole" and _bare_answer(text):  # "x^2+1": read as a reference is read
        answer = _parse_answer(text) or answer
    if _undone_computation(answer) and not _OPERATION.search(reference):
        answer = []  # (a reference such as 2^{10} asks for the expression)
    if gold and answer:
        return 1.0 if _equivalent(gold, answer) else 0.0
    if gold:
        return 0.0  # the response has no parsable answer
    # The reference is not parsable as mathematics: compare the normalised strings.
    got = _norm_text(normalize_answer(text))
    return 1.0 if got and got == _norm_text(normalize_answer(reference)) else 0.0


# An operation written between operands, or a command that computes ("9 * 2", "2^{10}",
# "\\frac{1}{2} + \\frac{1}{4}", "\\binom{10}{5}", "5!"); a leading minus and a fraction are values.
_OPERATION = re.compile(
    r"(?<=[\d})\]])\s*[-+*^]|!"
    r"|\\(?:times|cdot|div|[dt]?binom|choose|log|ln|lceil|lfloor|sum|prod|int|sqrt)(?![A-Za-z])"
)


# "1.5 \\times 10^3", "10^{6}", "10^{-2}": a value written in powers of ten
_SCIENTIFIC = re.compile(
    r"^\s*[-+]?(?:\d+(?:\.\d+)?\s*(?:\\times|\\cdot|\*)\s*)?10\s*\^\s*\{?\s*[-+]?\d+\s*\}?\s*$"
)
# degrees: "30^\\circ" is a value, its "^" no power
_DEGREES = re.compile(r"\^\s*\{?\s*\\circ\s*\}?")


def _decimal_number(expression: object) -> bool:
    """A number written with a decimal ("5 + 2.5"), whose rationality sympy leaves unknown:
    a value to compute, as a fraction's sum is; not an exact form with pi or a root
    ("0.5 \\cdot \\pi"), which may be the answer as written."""
    if not getattr(expression, "is_number", False):
        return False
    atoms = expression.atoms()  # type: ignore[attr-defined]
    roots = [p for p in expression.atoms(sympy.Pow) if not p.exp.is_Integer]  # type: ignore[attr-defined]
    plain = all(getattr(atom, "is_Number", False) for atom in atoms) and not roots
    return plain and any(getattr(atom, "is_Float", False) for atom in atoms)


def _undone_computation(parsed: list) -> bool:
    """Whether an answer is a numeric expression left to compute. math-verify evaluates it, so a
    response that only restates a question's expression ("Compute $\\binom{10}{5}$.", boxed or
    not) or stops before the result ("so she makes 9 * 2") would score, and a policy learns to
    box the question; an answer with variables ("x^2+1") or in scientific notation ("1.5 \\times
    10^3") is read as written."""
    if len(parsed) < 2 or not isinstance(parsed[-1], str):
        return False
    if _SCIENTIFIC.match(parsed[-1]):
        return False
    # a rational number: an exact form (2+\\sqrt{3}, \\pi/2 - 1) may be the answer as written
    expression = getattr(parsed[0], "rhs", parsed[0])  # "N = \\binom{10}{5}": its value
    rational = getattr(expression, "is_rational", False) or _decimal_number(expression)
    # "9 * 2 = 18" shows its result; "**72**." is bold, not a product
    value = _MARKDOWN.sub("", parsed[-1].rsplit("=", 1)[-1].rstrip(".").strip())
    return bool(rational) and _OPERATION.search(_DEGREES.sub("", value)) is not None


# In a response of several tokens, a word: two or more letters standing alone ("It is 18.",
# "so it is 18") or a label before a colon ("A: 18"), unless an operator or "=" stands beside
# it ("xy + 1", "y = mx + b": variables) or it is "and" / "or", which separate answers
_LETTERS_TOKEN = re.compile(r"[A-Za-z]{2,}")
# A letters token closed by punctuation ("is.", "So:", "A:") or followed by a lone colon ("A :")
# ends a phrase: a word whatever stands beside it.
_PHRASE_END = re.compile(r"[A-Za-z]+[.,;!?:]")
# An operator at a token's edge, a sign only where no number follows it ("-3" is a value)
_OPERATOR_TOKEN = re.compile(r"^(?:[*/^=<>]|[-+](?![\d.{\\]))|[-+*/^=<>]$")


def _has_short_word(text: str) -> bool:
    tokens = text.split()
    if len(tokens) < 2:
        return False
    for i, token in enumerate(tokens):
        after = tokens[i + 1 : i + 2]
        if _PHRASE_END.fullmatch(token) or (token.isalpha() and after == [":"]):
            return True
        if not _LETTERS_TOKEN.fullmatch(token) or token.lower() in ANSWER_SEPARATORS:
            continue
        if not any(_OPERATOR_TOKEN.search(t) for t in tokens[max(i - 1, 0) : i] + after):
            return True
    return False


def _bare_answer(response: str) -> bool:
    """A response that is only an answer: one short line without words (LaTeX commands aside).
    math-verify finds LaTeX only between delimiters, so "2\\sqrt{2}" alone parsed to nothing
    and "(1,2)" to its last number."""
    text = response.strip()
    plain = re.sub(r"\\[A-Za-z]+", "", text)
    words = re.search(r"[A-Za-z]{3,}", plain) or _has_short_word(plain)
    unclosed_box = "\\boxed" in text or "\\fbox" in text  # cut off: final_answer found none
    return bool(text) and "\n" not in text and len(text) <= 64 and not (words or unclosed_box)


def _norm_text(text: str) -> str:
    text = re.sub(r"\\text\{([^{}]*)\}", r"\1", text)
    return " ".join(text.replace("$", " ").split()).lower()


# --------------------------------------------------------------------------- exact_match


def exact_match(response: str, reference: str) -> float:
    """1.0 when response and reference are equal after collapsing whitespace."""
    return 1.0 if " ".join(response.split()) == " ".join(reference.split()) else 0.0


# --------------------------------------------------------------------------- numeric

# commas only as thousands separators (1,000): "1,2" is two numbers, not 12; digits glued to
# a letter in front are part of a name ("CO2", "H2O", "48 m2", "Q34", "v1.5"), not a number,
# nor is any part of them (a match cannot start inside a run of digits)
_NUMBER = re.compile(
    r"[-+]?(?<![A-Za-z\d.])(?:(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+)(?:[eE][-+]?\d+)?"
    r"(?:\s*/\s*\d+(?:\.\d+)?)?"
)


def _to_float(token: str) -> float | None:
    token = token.replace(",", "").replace(" ", "")
    try:
        if "/" in token:
            num, den = token.split("/", 1)
            return float(num) / float(den)
        return float(token)
    except (ValueError, ZeroDivisionError):
        return None


def last_number(text: str) -> float | None:
    """The last number written in text ("1,000", "-2.5", "1e-3", "3/4"), or None."""
    for match in reversed(list(_NUMBER.finditer(text))):
        value = _to_float(match.group(0))
        if value is not None:
            return value
    return None


# LaTeX a plain number is written with: a numeric fraction (signed, or after a whole number:
# a mixed number), thin spaces ("10,\\!000"), "{,}" thousands separators, a Unicode minus, math
# delimiters ("\\(18\\)"), degrees ("90^\\circ"), the square or cube of a unit ("48 cm^2");
# and the commands that leave a number plain (units in \\text, \\%, \\$, \\approx).
_NUMERIC_FRACTION = re.compile(
    r"(?:(?<![\d.,])(?P<whole>[-+]?\d+)|(?P<sign>[-+]?))\s*\\[dt]?frac\s*"
    # an argument in braces, or TeX's single digit without them ("\\frac12")
    r"(?:\{\s*(?P<num_sign>[-+]?)\s*(?P<num>\d+(?:\.\d+)?)\s*\}|(?P<num_digit>\d))\s*"
    r"(?:\{\s*(?P<den_sign>[-+]?)\s*(?P<den>\d+(?:\.\d+)?)\s*\}|(?P<den_digit>\d)(?!\d))"
)
# "-\\$5", "-$5": the minus is the number's, as in "\\$-5" (not after an operand: "$3-$5")
_SIGN_BEFORE_CURRENCY = re.compile(r"(?<![\w)}])([-+])\\?\$(?=\s*\.?\d)")
# "x > 5", "x >= 5", "x ≥ 5": a comparison after something on its line (a Markdown quote's
# ">" starts a line), written as the LaTeX command the more-than-a-number check refuses; read
# in a marked final answer only, since prose around a plain last number compares freely
# ("since 12 > 10 she pays 18"). Tags ("</think>", "<|im_end|>") and GSM8K's calculator notes
# ("<<9*2=18>>") are dropped first, and an arrow ("=>", "->") is no comparison.
_TAG = re.compile(r"</?[A-Za-z][\w-]*(?:\s[^<>]*)?/?>|<\|[^<>|]*\|>|<\uff5c[^<>\uff5c]*\uff5c>")
_CALCULATOR = re.compile(r"<<[^<>]*>>")
_COMPARISON = re.compile(r"(?<=[^\s<>=-])[ \t]*(>=|<=|[<>\u2264\u2265\u2260])")
_COMPARISON_COMMANDS = {
    **dict.fromkeys((">=", "\u2265"), "\\geq"),
    **dict.fromkeys(("<=", "\u2264"), "\\leq"),
    ">": "\\gt",
    "<": "\\lt",
    "\u2260": "\\neq",
}
# "48 cm^2", "48 \\text{ cm}^2", "48\\,\\mathrm{m}^3", "48\\,\\mathrm{cm^2}", "$48$ cm$^2$": the
# square or cube of a unit after a number. A unit in \\text is a word ("e" is Euler's number) or
# "m"; a bare one is a common unit of length, so "10^2" and "2x^2" keep their powers.
_UNIT_POWER = re.compile(
    r"(?<=\d)\$?(\s*\\(?:text|textrm|mathrm|mbox)\s*\{\s*(?:[A-Za-z]{2,}|m)(?:\s*\})?"
    r"|\s*(?:[ck]m|mm|ft|yd)|\s+(?:m|in|mi|units?))(?![A-Za-z])\$?\s*\^\s*"
    # a letter or an operand glued to the power ("m^2n") makes it an expression's
    r"(?:[23](?!\d)|\{\s*[23]\s*\})(?![A-Za-z0-9({\\])"
)
_MATH_DELIMITER = re.compile(r"\\[()\[\]]|\\\\(?![A-Za-z])")
_DEGREES = re.compile(r"\^\s*\{?\s*\\circ\s*\}?")
_LATEX_COMMAND = re.compile(r"\\([A-Za-z]+|.)")
_COMMAND_BEFORE_DIGIT = re.compile(r"(\\[A-Za-z]+)(?=\d)")
_PLAIN_COMMANDS = frozenset(
    {"text", "textbf", "textrm", "mathrm", "mathbf", "mbox", "left", "right", "displaystyle"}
    | {"quad", "qquad", "boxed", "fbox", "approx", "textdollar", "begin", "end", "%", "$"}
)


# Unicode's vulgar fractions, alone or after a whole number ("½", "2¾": a mixed number)
_VULGAR_FRACTION = re.compile(
    r"(?:(?<![\d.,])(?P<whole>[-+]?\d+)\s*)?(?P<fraction>[\u00bc-\u00be\u2150-\u215e])"
)
# what makes a value more than a number without LaTeX: pi, a root, a power in superscript
# digits ("4π", "√2", "sqrt(2)", "2²"), which a number beside it is not the value of
_UNICODE_BEYOND = re.compile(
    r"[π√∛∜\u00b2\u00b3\u00b9\u2070-\u2079]|(?<![A-Za-z])(?:sqrt|pi)(?![A-Za-z])"
)
# "48 m²", "5 cm²", "7 m³": a unit's square or cube in superscript digits, as _UNIT_POWER's
_UNICODE_UNIT_POWER = re.compile(
    r"(?<=\d)(\s*(?:[ck]m|mm|ft|yd|m|in|mi|units?))[\u00b2\u00b3](?!\w)"
)


def _plain_vulgar_fraction(match: re.Match[str]) -> str:
    """A vulgar fraction as "a/b" ("¾" -> 3/4); after a whole number, one fraction ("2¾" ->
    11/4, "-1½" -> -3/2)."""
    value = Fraction(unicodedata.numeric(match["fraction"])).limit_denominator(10)
    whole = match["whole"]
    if whole:
        value = (abs(int(whole)) + value) * (-1 if whole.startswith("-") else 1)
    return f" {value.numerator}/{value.denominator}"


def _plain_fraction(match: re.Match[str]) -> str:
    """A numeric fraction as "a/b" with its signs gathered in front (\\frac{-3}{4} -> -3/4); a
    mixed number as one fraction (-1\\frac{1}{2} -> -3/2)."""
    whole = match["whole"]
    num, den = match["num"] or match["num_digit"], match["den"] or match["den_digit"]
    signs = (whole or match["sign"], match["num_sign"] or "", match["den_sign"] or "")
    negative = sum(sign.startswith("-") for sign in signs) % 2 == 1
    if whole:
        num = str(abs(Decimal(whole)) * Decimal(den) + Decimal(num))
    return f" {'-' if negative else ''}{num}/{den}"


def _plain_number_text(text: str, comparisons: bool = True) -> str:
    """text with LaTeX's ways of writing a plain number made plain: \\frac{3}{4} -> 3/4 (and
    1\\frac{1}{2} -> 3/2), thin spaces, math delimiters, tags, calculator notes and a unit's
    power dropped, {,} as a comma, ^\\circ as degrees, the Unicode minus as "-", a minus before
    "$" after it; and with comparisons, one ("x > 5") as its LaTeX command (\\gt), which is
    more than a number."""
    text = _TAG.sub(" ", _CALCULATOR.sub(" ", text))
    text = text.replace("\u2212", "-").replace("{,}", ",")
    text = _DEGREES.sub(" degrees", _MATH_DELIMITER.sub(" ", text))
    text = _SIGN_BEFORE_CURRENCY.sub(r"\1", _LATEX_SPACE.sub("", text))
    if comparisons:
        text = _COMPARISON.sub(lambda m: f" {_COMPARISON_COMMANDS[m[1]]} ", text)
    text = _VULGAR_FRACTION.sub(_plain_vulgar_fraction, _UNICODE_UNIT_POWER.sub(r"\1", text))
    text = _UNIT_POWER.sub(r"\1", _NUMERIC_FRACTION.sub(_plain_fraction, text))
    # a command's digit is a number ("\\approx3.14"), where a letter's is a name's ("CO2")
    return _COMMAND_BEFORE_DIGIT.sub(r"\1 ", text)


def _beyond_a_number(text: str) -> bool:
    """Whether the value text states (made plain) is more than a number: what follows the last
    "=" on the line of its last number holds a power, a root, pi, a product or a comparison
    ("\\sqrt{2}", "10^2", "2\\pi", "3\\times 6", "x \\gt 5", and without LaTeX "4π", "√2",
    "sqrt(2)", "2²"), whose last number is not the value."""
    value = _value(text)
    if "^" in value or _UNICODE_BEYOND.search(value):
        return True
    return any(c not in _PLAIN_COMMANDS for c in _LATEX_COMMAND.findall(value))


def _value(text: str) -> str:
    """What follows the last "=" on the line of text's last number."""
    return _number_line(text).rsplit("=", 1)[-1]


def _number_line(text: str) -> str:
    """The line of text that holds its last number (all of text when it has none)."""
    matches = list(_NUMBER.finditer(text))
    if not matches:
        return text
    start = text.rfind("\n", 0, matches[-1].start()) + 1
    end = text.find("\n", matches[-1].end())
    return text[start : None if end < 0 else end]


def numeric_reference(reference: str) -> float:
    """The reference's number; BadReference (a data error) when it has none or several, or
    writes an expression rather than a number (use math_verify for those)."""
    plain = _plain_number_text(reference)
    if _beyond_a_number(plain):
        raise BadReference(
            f"reference {reference!r} is an expression, not a plain number: score such "
            "references with sgpo.verifiers:math_verify"
        )
    numbers = _NUMBER.findall(plain)
    if len(numbers) > 1:  # "3:30", "(3, 4)", "2, -3": which one would a response be held to?
        raise BadReference(
            f"reference {reference!r} holds {len(numbers)} numbers, not one: score such "
            "references with sgpo.verifiers:math_verify"
        )
    expected = last_number(plain)
    if expected is None:
        raise BadReference(f"reference {reference!r} contains no number")
    if not math.isfinite(expected):
        raise BadReference(f"reference {reference!r}: its number is not finite")
    return expected


def numeric(response: str, reference: str, rel_tol: float = 1e-6, abs_tol: float = 0.0) -> float:
    """1.0 when the last number in the response's final answer is within rel_tol (relative) or
    abs_tol (absolute) of the reference number; with abs_tol 0, integers must be equal.
    LaTeX's plain numbers count (\\frac{3}{4}, \\frac{-3}{4}, the mixed number 1\\frac{1}{2},
    10,\\!000, \\(18\\), a Unicode minus, -\\$5), and so do units, squared or cubed ones too
    (48 \\text{ cm}^2); a final answer whose value (after the last "=" on the line of its last
    number) is more than a number (\\sqrt{2}, 10^2, x > 5) scores 0, since its last
    number is not its value, and so does a marked one (boxed, ####, answer is) holding several
    numbers (17 or 18). An unparsable reference, or one that is more than one number, raises
    BadReference (a data error that stops the run, not a wrong answer)."""
    expected = numeric_reference(reference)
    kind, text = final_answer(response)
    plain = _plain_number_text(text, comparisons=kind != "whole")
    if _beyond_a_number(plain):
        return 0.0
    if kind != "whole" and len(_NUMBER.findall(_value(plain))) > 1:
        return 0.0  # a marked answer of several numbers ("17 or 18", "2, 3, 4"): which one?
    got = last_number(plain)
    if got is None or not math.isfinite(got):
        return 0.0
    if abs_tol == 0 and expected.is_integer() and got.is_integer():
        # rel_tol is for rounded decimals: 1000001 is not 1000000
        return 1.0 if got == expected else 0.0
    return 1.0 if math.isclose(got, expected, rel_tol=rel_tol, abs_tol=abs_tol) else 0.0


# --------------------------------------------------------------------------- multiple_choice

_CHOICE_PATTERNS = [
    # the final, boxed answer first: "Looking at answer B ... \\boxed{C}" picks C
    re.compile(r"\\boxed\{\s*(?:\\text\{)?\s*\(?([A-Ea-e])\)?\s*\}?\s*\}"),
    # "The answer is (B)", "Answer: B", "the correct answer is **C**"
    re.compile(r"(?i:answer)\s*(?:(?i:is)\s*)?:?\s*[*_]*\s*\(?\s*([A-E])\b\s*\)?"),
    # lower case in brackets or closing the response ("answer is (b)", "Answer: b."), not the
    # article of "the answer is a number"
    re.compile(r"(?i:answer)\s*(?:(?i:is)\s*)?:?\s*[*_]*\s*(?:\(\s*([a-e])\s*\)|([a-e])[\s*_.]*$)"),
    # "the correct option is C", "I choose C", "C is correct." ending its sentence, or a
    # closing "..., so C." (the last such phrase: over a bracketed letter met after it in the
    # explanation of the other options)
    re.compile(
        r"(?i:option|choice)\s*(?:(?i:is)\s*:?|:)\s*[*_]*\s*\(?\s*([A-E])\b\s*\)?"
        r"|(?i:choose|pick|select)\s+[*_]*\(?\s*([A-E])\b\s*\)?"
        r"|(?<![\w(])\(?([A-E])\)?\s+(?i:is)\s+(?i:the\s+)?(?i:correct|right)"
        r"(?:\s+(?i:answer|option|choice))?(?=\s*(?:[.!]|$))"
        r"|\b(?i:so)\s+[*_]*\(?([A-E])\)?[*_]*[.!]?\s*$"
    ),
    # capitals only: "(a)", "(b)" also number the steps of an argument
    re.compile(r"\(([A-E])\)"),
]
# a letter a pick goes on with, or follows: "A, B, C or D", "A and C", "(A) or (C)", "A/B",
# "B, or maybe C"
_MORE_CHOICES = re.compile(
    r"[*_]*\s*\)?[*_]*\s*(?:,(?:\s*(?:or|and)\b)?|/|\bor\b|\band\b)\s*"
    r"(?:(?:maybe|perhaps|possibly)\s+)?[*_]*\s*"
    # another letter, not a sentence about it ("The answer is C, A is wrong.")
    r"(?:\(\s*[A-Ea-e]\s*\)|[A-E]\b)(?!\s+(?:is|are|was|were|isn't|fails?)\b)"
)
_EARLIER_CHOICE = re.compile(r"(?:\(\s*[A-Ea-e]\s*\)|\b[A-E])[*_]*\s*(?:,|/|\bor\b)\s*[*_]*\(?\s*$")
_LONE_CHOICE = re.compile(r"^[\s*_(]*([A-Ea-e])[\s*_).:]*$")


def choice_letter(text: str) -> str | None:
    """The letter A-E a response picks, or None. Tried in order: the last \\boxed{X}, the last
    "answer is (X)" / "Answer: X", the last "option is X" / "choose X" / "X is correct." / a
    closing "so X.", the last "(X)", a response that is just the letter. A pick beside another
    letter ("the answer is A, B or C", "(A) or (C)", "B, or maybe C") hedges: None."""
    for pattern in _CHOICE_PATTERNS:
        matches = list(pattern.finditer(text))
        if matches:
            last = matches[-1]
            picked = next(i for i, group in enumerate(last.groups(), 1) if group)
            before = text[: last.start(picked)]
            if _MORE_CHOICES.match(text, last.end()) or _EARLIER_CHOICE.search(before):
                return None
            return last.group(picked).upper()
    match = _LONE_CHOICE.match(text)
    return match.group(1).upper() if match else None


def choice_reference(reference: str) -> str:
    """The reference's letter; BadReference (a data error) when it is not one of A-E."""
    expected = choice_letter(reference.strip().upper())
    if expected is None:
        raise BadReference(f"reference {reference!r} is not a choice letter A-E")
    return expected


def multiple_choice(response: str, reference: str) -> float:
    """1.0 when the response picks the reference letter (reference "B", "(B)" or "b"). An
    unparsable reference raises BadReference (a data error). Read after the last </think>, as
    the free-form answers are (answer_part)."""
    expected = choice_reference(reference)
    part = answer_part(response)
    return 1.0 if part is not None and choice_letter(part) == expected else 0.0


# --------------------------------------------------------------------------- reference checks

# For each verifier here that can tell a bad reference: a check that raises BadReference.
# sgpo.verify.Verifier runs it in sgpo's own process (whatever the isolation) on every
# reference before scoring, so a bad reference stops the run instead of scoring 0.
REFERENCE_CHECKS = {
    "numeric": numeric_reference,
    "multiple_choice": choice_reference,
    "math_verify": math_reference,
}
