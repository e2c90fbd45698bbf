"""Ready-made verifiers (sgpo.verifiers) and the Verifier runner's handling of bad verifiers."""

from __future__ import annotations

import gc
import importlib.abc
import importlib.util
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from tiny_run import tiny_tree

from sgpo import sandbox
from sgpo.config import RunConfig
from sgpo.errors import ConfigError
from sgpo.profile import run_profile
from sgpo.rundir import file_sha256
from sgpo.verifiers import (
    choice_letter,
    exact_match,
    final_answer,
    last_boxed,
    last_number,
    math_reference,
    math_verify,
    multiple_choice,
    numeric,
)
from sgpo.verify import BadReference, Verifier, verifier_code_sha256

TESTS_DIR = str(Path(__file__).parent)

# ----------------------------------------------------------------------------- math_verify

EQUIVALENT = [
    # fractions vs decimals
    ("The answer is 0.5", "\\frac{1}{2}"),
    ("\\boxed{\\frac{1}{2}}", "0.5"),
    ("so we get \\boxed{0.75}", "3/4"),
    ("The answer is $\\dfrac{3}{4}$.", "0.75"),
    ("\\boxed{\\frac12}", "0.5"),
    # LaTeX vs plain
    ("\\boxed{2\\sqrt{3}}", "\\sqrt{12}"),
    ("\\boxed{\\frac{\\pi}{2}}", "\\pi/2"),
    ("\\boxed{\\{1,2\\}}", "\\{2,1\\}"),
    ("\\boxed{(1,2)}", "(1, 2)"),
    ("\\boxed{x=5}", "5"),
    ("\\boxed{-3}", "-3"),
    ("\\boxed{\\text{Monday}}", "\\text{Monday}"),
    # math delimiters, LaTeX spacing and units set in \\text around a number
    ("The answer is $72$ clips.", "72"),
    ("**Answer:** $72$ clips", "72"),
    ("\\boxed{72~\\text{clips}}", "72"),
    ("\\boxed{\\text{72 clips}}", "72"),
    ("\\boxed{1\\,000}", "1{,}000"),
    # a response that is only the answer, without delimiters (a base or terse model)
    ("x^2+1", "x^2+1"),
    ("2\\sqrt{2}", "\\sqrt{8}"),
    ("(1,2)", "(1, 2)"),
    ("\\dfrac{3}{4}", "0.75"),
    ("2xy", "2yx"),
    ("xy", "yx"),
    # a terse sentence whose words are short: not letters multiplied into the answer
    ("It is 18.", "18"),
    ("so it is 18", "18"),
    ("x is 18", "18"),
    ("So: 18", "18"),
    ("A: 18", "18"),
    ("so it is \\(18\\)", "18"),
    # ... but letters beside an operator are variables, and "or" separates answers
    ("xy + 1", "xy+1"),
    ("ab + cd", "ab+cd"),
    ("y = mx + b", "mx+b"),
    ("x = -2 or x = 3", "-2, 3"),
    # a sign before a number is no operator: the word beside it stays a word
    ("A: -3", "-3"),
    ("is -5", "-5"),
    ("x is -2", "-2"),
    ("so -\\frac{1}{2}", "-\\frac{1}{2}"),
    ("A : 18", "18"),
    # thousands separators
    ("#### 1,000", "1000"),
    ("#### 1000", "1,000"),
    ("1,000 apples in all", "1000"),
    ("the total is 2,500.", "2500"),
    # units and currency
    ("She makes 9 * 2 = $18 every day.", "18"),
    ("The answer is 18 dollars.", "18"),
    ("#### $18", "18"),
    ("\\boxed{18 \\text{ dollars}}", "18"),
    ("\\boxed{\\$18.00}", "18"),
    ("#### 18 dollars", "18"),
    ("\\boxed{5 cm}", "5"),
    ("\\boxed{5kg}", "5"),
    # the square or cube of a unit after the number asked for
    ("\\boxed{18 m^2}", "18"),
    ("\\boxed{18 cm^2}", "18"),
    ("\\boxed{18 units^2}", "18"),
    ("The answer is 27 ft^3.", "27"),
    ("\\boxed{18 m^2}", "18 m^2"),
    # which answer counts: the last boxed, the line after ####, the last "answer is"
    ("First \\boxed{3}, no wait: \\boxed{7}", "7"),
    ("#### 18\n\nSome trailing words and 99", "18"),
    # a Markdown heading is not GSM8K's answer marker
    ("#### Step 1: Add\n2 + 3 = 5\n#### Step 2: Conclude\nThe answer is 5.", "5"),
    ("#### **1,000**", "1000"),
    ("\\boxed{(0, 100)}", "(0,100)"),  # a point, not a number with a separator
    ("The answer is 1,000 apples.", "1000"),
    # an answer after "####" may start with a variable, a sign or a brace; separators anywhere
    ("#### x = 5", "5"),
    ("#### −5", "-5"),
    ("#### {2, 3}", "\\{2,3\\}"),
    ("\\boxed{x = 12,500}", "12500"),
    ("The answer is x = 1,000", "1000"),
    ("So 12 is wrong. The answer is 7", "7"),
    ("Step one gives 4, then 4 + 3 = 7", "7"),
    # a decimal percentage is its number, as math-verify holds an integer's (25% is 25)
    ("#### 7.5%", "7.5"),
    ("The answer is 7.5%.", "7.5"),
    ("\\boxed{12.5\\%}", "12.5"),
    ("\\boxed{7.5}", "7.5\\%"),
    ("7.5%", "7.5"),
    ("\\boxed{0.075}", "7.5\\%"),
    ("\\boxed{1.5 + \\sqrt{2}}", "1.5 + \\sqrt{2}"),  # the expression asked for
    ("\\boxed{3 \\text{ dozen}}", "3 \\text{ dozen}"),
    ("\\boxed{18 \\text{ cm}}", "18"),
    # ... but a counted noun in \\text{} is what is counted
    ("\\boxed{5 \\text{ quarters}}", "5"),
    ("\\boxed{2 \\text{ times}}", "2"),
    ("\\boxed{0.5 \\cdot \\pi}", "\\frac{\\pi}{2}"),  # an exact form, not a sum left undone
    # degrees written with the sign, or with a scale after them
    ("\\boxed{25°}", "25"),
    ("\\boxed{25 °C}", "25"),
    ("\\boxed{25^\\circ C}", "25"),
    ("\\boxed{25}", "25°"),
    # vulgar fractions are their values, alone, in a mixed number, with a unit after them
    ("\\boxed{1½}", "3/2"),
    ("\\boxed{½}", "0.5"),
    ("\\boxed{-1½}", "-1.5"),
    ("\\boxed{3/2}", "1½"),
    ("\\boxed{2¾ cups}", "11/4"),
    ("\\boxed{3/4 cups}", "0.75"),
    ("\\boxed{1,000½}", "1000.5"),  # after its thousands separator
]

NOT_EQUIVALENT = [
    ("#### 17", "18"),
    ("It is 17.", "18"),
    ("\\boxed{\\frac{1}{3}}", "0.5"),
    ("\\boxed{0.333}", "\\frac{1}{3}"),
    ("\\boxed{3}", "-3"),
    ("\\boxed{Tuesday}", "\\text{Monday}"),
    ("", "18"),
    ("I don't know", "18"),
    ("\\boxed{7} and the answer is 8", "8"),  # the boxed answer wins
    ("\\boxed{5", "5"),  # cut off before the box closed
    ("5, 7", "7"),  # a bare answer of two numbers is not its last one
    ("(1,2)", "2"),
    ("The answer is 12. Then 7", "7"),
    # letters after a number that are not a unit: an imaginary unit, a variable, a constant
    ("\\boxed{6}", "6i"),
    ("\\boxed{2}", "2x"),
    ("\\boxed{2x}", "2"),
    ("\\boxed{5}", "5e"),
    ("\\boxed{4}", "4 pi"),
    # separators of a point or interval are not thousands separators
    ("\\boxed{100}", "[0,100]"),
    ("\\boxed{5100}", "(5,100)"),
    # words that change a number's value are not units
    ("\\boxed{3 hundred}", "3"),
    ("\\boxed{3 dozen}", "3"),
    ("\\boxed{3 halves}", "3"),
    ("\\boxed{2 squared}", "2"),
    ("\\boxed{18 x^2}", "18"),  # a variable's power, not a unit's
    ("\\boxed{2 m^2n}", "2"),  # an expression glued to the power
    ("\\boxed{18 m^2}", "18 m"),
    ("\\boxed{1.5 million}", "1.5"),
    ("#### Step 5: wrong work\nThe answer is 7.", "5"),  # the heading's 5 is not the answer
    ("\\boxed{7.6\\%}", "7.5"),
    # ... read as any answer is: a computation left undone is no percentage's value
    ("\\boxed{9 \\times 2}", "18%"),
    ("\\boxed{\\binom{5}{2}}", "10%"),
    ("\\boxed{5 + 2.5}", "7.5%"),
    ("\\boxed{5 + 2.5}", "7.5"),  # decimals too, as fractions' sums
    ("\\boxed{\\text{3 halves}}", "3"),  # a fraction's word is its value's
    # a value word in \text{} changes the value as it does written plain
    ("\\boxed{3 \\text{ dozen}}", "3"),
    ("\\boxed{1.5\\text{ million}}", "1.5"),
    ("\\boxed{26°}", "25"),
    ("\\boxed{1½}", "1"),
    ("\\boxed{1½}", "0.5"),
    ("\\boxed{3/4 x}", "0.75"),  # a fraction of a variable
    ("\\boxed{1/2 xy}", "0.5"),  # ... or of two: no unit
    ("\\boxed{1.5½}", "0.75"),  # a fraction glued to a decimal is no number
    ("\\boxed{1.5½}", "2"),
]


@pytest.mark.parametrize(("response", "reference"), EQUIVALENT)
def test_math_verify_equivalent(response: str, reference: str) -> None:
    assert math_verify(response, reference) == 1.0


@pytest.mark.parametrize(("response", "reference"), NOT_EQUIVALENT)
def test_math_verify_wrong(response: str, reference: str) -> None:
    assert math_verify(response, reference) == 0.0


@pytest.mark.parametrize(
    "reference",
    [
        "72",
        "\\frac{1}{2}",
        "(1,2)",
        "x^2+1",
        "\\text{(B)}",
        "\\text{Evelyn}",
        "72 dollars",
        "10 \\text{ inches}",
        "\\sin x",
        "\\begin{pmatrix}1\\\\2\\end{pmatrix}",
        "-2, 1",
        # letters beside mathematics are variables; "and" separates answers
        "2abc",
        "\\sqrt{abc}",
        "2 and 3",
        "x=1 and y=2",
        # what math-verify cannot parse is compared as text
        "0.\\overline{36}",
    ],
)
def test_math_references_that_parse_as_mathematics(reference: str) -> None:
    assert math_reference(reference)
    assert math_verify(f"\\boxed{{{reference}}}", reference) == 1.0


@pytest.mark.parametrize(
    ("reference", "why"),
    [
        ("}", "holds no answer"),
        ("east", "reads the word 'east' as a product of its letters"),
        ("The answer is 72", "reads the word 'The'"),
        ("see solution", "reads the word 'see'"),
    ],
)
def test_math_references_that_do_not(reference: str, why: str) -> None:
    # "east" parses as E*a*s*t: only "seat" or "teas" would score against it
    assert math_verify("\\boxed{seat}", "east") == 1.0
    with pytest.raises(BadReference, match=why):
        math_reference(reference)
    with pytest.raises(BadReference, match=f"query 'q:0': field 'answer': .*{why}"):
        Verifier("sgpo.verifiers:math_verify").check_reference(reference, "query 'q:0'")


def test_math_verify_off_the_main_thread() -> None:
    # math-verify's own signal-based timeouts would make it return "no answer" here.
    results: list[float] = []
    thread = threading.Thread(target=lambda: results.append(math_verify("\\boxed{0.5}", "1/2")))
    thread.start()
    thread.join()
    assert results == [1.0]


def test_answer_extraction() -> None:
    assert last_boxed("a \\boxed{\\frac{1}{\\sqrt{2}}} b \\boxed{\\{1\\}}") == "\\{1\\}"
    assert last_boxed("\\boxed{1} then \\boxed{2") == "1"  # an unclosed last box is skipped
    assert last_boxed("no box") is None
    assert last_boxed("$\\boxed 12$ is it") == "12"  # unbraced, read up to the "$"
    assert last_boxed("\\boxed{1} and \\boxed 2\nmore") == "2"
    assert last_boxed("\\boxedx 3 or \\boxed") is None  # another macro; nothing boxed
    assert last_boxed("put it in \\boxed format, as \\boxed{} asks") == ""  # prose is no box
    assert last_boxed("so \\boxed A") == "A" and last_boxed("\\boxed (3, 4)") == "(3, 4)"
    assert final_answer("x \\fbox{4}") == ("boxed", "4")
    assert final_answer("work\n#### 42\nmore") == ("hashes", "42")
    assert final_answer("#### Step 5: wrong\nThe answer is 7.") == ("answer-is", "7")
    assert final_answer("The answer is: 3.5. Done") == ("answer-is", "3.5")
    assert final_answer("just 5") == ("whole", "just 5")


# ----------------------------------------------------------------------------- others


def test_exact_match() -> None:
    assert exact_match("  hello \n world ", "hello world") == 1.0
    assert exact_match("Hello world", "hello world") == 0.0
    assert exact_match("hello", "hello world") == 0.0


@pytest.mark.parametrize(
    ("response", "reference", "expected"),
    [
        ("x is 1,000.0000001", "1000", 1.0),
        ("so x = 3/4", "0.75", 1.0),
        ("-2.5", "-2.50", 1.0),
        ("1e-3", "0.001", 1.0),
        ("#### 5\nthen 7", "5", 1.0),
        ("#### Step 5: wrong work\nThe answer is 7.", "5", 0.0),  # a heading, not an answer
        ("#### x = 5", "5", 1.0),
        ("1.1", "1", 0.0),
        ("1.00001", "1", 0.0),
        ("no number here", "1", 0.0),
        # a comma is a thousands separator only before groups of three digits
        ("x = 1,2", "12", 0.0),
        ("2,5", "25", 0.0),
        ("12,345,678", "12345678", 1.0),
        # LaTeX: a fraction is its value; a root, a power or pi is not its last number
        ("\\boxed{\\frac{1}{2}}", "2", 0.0),
        ("\\boxed{\\dfrac{1}{2}}", "0.5", 1.0),
        # TeX's single-digit arguments without braces
        ("\\boxed{\\frac12}", "0.5", 1.0),
        ("\\boxed{-\\frac34}", "-0.75", 1.0),
        ("\\boxed{1\\frac12}", "1.5", 1.0),
        ("\\boxed{\\frac12}", "2", 0.0),
        ("\\boxed{-\\frac{3}{4}}", "-0.75", 1.0),
        ("\\boxed{\\sqrt{2}}", "2", 0.0),
        ("\\boxed{10^2}", "2", 0.0),
        ("\\boxed{2\\pi}", "2", 0.0),
        ("\\boxed{10,\\!000}", "10000", 1.0),
        ("\\boxed{50\\%}", "50", 1.0),
        ("\\boxed{5 \\text{ apples}}", "5", 1.0),
        ("\\boxed{\u22123}", "3", 0.0),  # a Unicode minus
        ("\\boxed{\u22123}", "-3", 1.0),
        ("We square: x^2 = 25.\nSo x is 5", "5", 1.0),  # a power elsewhere in the reasoning
        ("\\boxed{0.75}", "\\frac{3}{4}", 1.0),
        ("\\boxed{4}", "\\frac{3}{4}", 0.0),
        ("-7", "\u22127", 1.0),
        # ... and what still reads as a plain number: delimiters, degrees, approximations,
        # units, {,} separators, working before the last "=" of a line
        ("The answer is \\(18\\).", "18", 1.0),
        ("#### \\(18\\)", "18", 1.0),
        ("The answer is 3 \\times 6 = 18", "18", 1.0),
        ("\\boxed{3\\times 6}", "6", 0.0),
        ("So she makes 9 \\times 2 = \\$18 every day.", "18", 1.0),  # working, not marked
        ("Let me compute 2^3 = 8, total 8 apples", "8", 1.0),
        ("\\boxed{18^\\circ}", "18", 1.0),
        ("\\boxed{\\approx 18}", "18", 1.0),
        ("\\boxed{18 \\mbox{ cm}}", "18", 1.0),
        ("\\boxed{10{,}000}", "10000", 1.0),
        ("\\boxed{18}", "90^\\circ", 0.0),
        ("90", "90^\\circ", 1.0),
        ("\\sqrt{2}", "2", 0.0),  # a response that is only an answer is a marked one
        ("The final answer goes in \\boxed format.\n#### 18", "18", 1.0),  # no box in prose
        ("Hence the area is 4\\pi", "4", 0.0),  # unmarked, and still not its last number
        ("Thus x = \\sqrt{2}.", "2", 0.0),
        ("\\begin{align} x &= 18 \\\\ \\end{align}", "18", 1.0),
        ("\\boxed{\\\\sqrt{2}}", "2", 0.0),  # a doubly escaped command is still one
        # the square or cube of a unit is the unit's, not the number's; a power of a number
        # (or of a variable, or of an upright e) is still more than a number
        ("\\boxed{48 \\text{ cm}^2}", "48", 1.0),
        ("\\boxed{48\\,\\mathrm{m}^3}", "48", 1.0),
        ("\\boxed{48 cm^2}", "48", 1.0),
        ("The area is 48 \\text{cm}^{2}", "48", 1.0),
        ("\\boxed{48\\,\\mathrm{cm^2}}", "48", 1.0),
        ("\\boxed{48}", "48 \\text{ cm}^2", 1.0),
        ("\\boxed{48}", "48 cm^2", 1.0),
        ("The answer is $18$ cm$^2$.", "18", 1.0),  # the unit's power in inline math
        ("The answer is 18 cm$^2$.", "18", 1.0),
        # a digit right after a LaTeX command or a sign after a letter is still a number
        ("$\\approx3.14$", "3.14", 1.0),
        ("\\boxed{\\textdollar18}", "18", 1.0),
        ("The answer is x-3", "-3", 1.0),
        # digits glued to a letter in front are a name's: "CO2" holds no 2
        ("It makes 44 grams of CO2", "44", 1.0),
        ("It makes 44 grams of CO2", "2", 0.0),
        ("The floor is 48 m2", "48", 1.0),
        ("\\boxed{H2O}", "2", 0.0),
        # ... nor is any part of such a name
        ("The answer is Q34", "4", 0.0),
        ("The answer is Q34", "34", 0.0),
        ("version v1.5", "0.5", 0.0),
        ("It is x10", "0", 0.0),
        ("\\boxed{10^2}", "10", 0.0),
        ("\\boxed{2x^2}", "2", 0.0),
        ("\\boxed{3\\mathrm{e}^2}", "3", 0.0),
        # a sign in a fraction's numerator or denominator
        ("\\boxed{\\frac{-3}{4}}", "-0.75", 1.0),
        ("\\boxed{\\tfrac{-3}{4}}", "-0.75", 1.0),
        ("\\boxed{\\frac{3}{-4}}", "-0.75", 1.0),
        ("\\boxed{-\\frac{-3}{4}}", "0.75", 1.0),
        ("\\boxed{-0.75}", "\\frac{-3}{4}", 1.0),
        # a mixed number is its whole value, not its fraction
        ("\\boxed{1\\frac{1}{2}}", "1.5", 1.0),
        ("\\boxed{1 \\frac{1}{2}}", "1.5", 1.0),
        ("\\boxed{-1\\frac{1}{2}}", "-1.5", 1.0),
        ("\\boxed{1\\frac{1}{2}}", "0.5", 0.0),
        ("\\boxed{2\\dfrac{3}{4} \\text{ cups}}", "2.75", 1.0),
        ("\\boxed{1.5}", "1\\frac{1}{2}", 1.0),
        ("\\boxed{-1.5}", "-1\\frac{1}{2}", 1.0),
        # a minus before a currency sign is the number's
        ("\\boxed{-\\$5}", "-5", 1.0),
        ("\\boxed{-\\$5}", "5", 0.0),
        ("\\boxed{\\$-5}", "-5", 1.0),
        ("\\boxed{\\$-5}", "-\\$5", 1.0),
        ("#### -$5", "-5", 1.0),
        # an inequality is not a value; a comparison in the working before the last "=", a
        # Markdown quote's ">" and a tag's are no inequality
        ("\\boxed{x > 5}", "5", 0.0),
        ("\\boxed{x < 5}", "5", 0.0),
        ("\\boxed{x >= 5}", "5", 0.0),
        ("\\boxed{x \u2265 5}", "5", 0.0),
        ("\\boxed{x \\geq 5}", "5", 0.0),
        ("The answer is x > 5", "5", 0.0),
        ("Since 7 > 5, x = 7", "7", 1.0),
        ("> **Final answer:** 42", "42", 1.0),
        ("</think> 42", "42", 1.0),
        # prose compares freely around an unmarked last number; GSM8K's calculator notes and
        # chat models' end tokens are no comparison either
        ("Since 12 > 10, she gets a discount, so she pays 18.", "18", 1.0),
        ("She needs at least 5 boxes because 4 < 4.5 < 5.", "5", 1.0),
        ("We need n > 5, so the smallest n is 6", "6", 1.0),
        ("She makes 9 * 2 = $<<9*2=18>>18 every day at the market.", "18", 1.0),
        ("The answer is <<9*2=18>>18.", "18", 1.0),
        ("\\boxed{<<9*2=18>>18}", "18", 1.0),
        ("#### 18<|im_end|>", "18", 1.0),
        ("The answer is 18<|eot_id|>", "18", 1.0),
        ("<think>a < b</think> 8", "8", 1.0),
        ('<span class="x">18</span>', "18", 1.0),
        # a variable after a number is no unit: 2m^2 is more than 2
        ("\\boxed{2m^2}", "2", 0.0),
        ("\\boxed{48 m^2}", "48", 1.0),
    ],
)
def test_numeric(response: str, reference: str, expected: float) -> None:
    assert numeric(response, reference) == expected


# What a reasoning model or a cut-off response writes, read alike by math_verify and numeric:
# the answer after the last </think>, none inside an unclosed <think> or an unclosed last box;
# "Answer:" marks an answer as "answer is" does, whose clause ends at a comma before a word.
ANSWER_PART_CASES = [
    ("<think>\nSo 9*2 = 18. \\boxed{18}\n</think>\n\nJanet makes \\$20 every day.", "18", 0.0),
    ("<think>\nFirst guess: \\boxed{20}. No, 9*2=18.\n</think>\n\n#### 18", "18", 1.0),
    ("9 * 2 = 18.</think>The answer is 18.", "18", 1.0),  # the template opened the <think>
    ("<think>\n9*2=18, so the answer is 18. Wait, let me re-read the", "18", 0.0),
    ("So the answer is \\boxed{18", "18", 0.0),
    ("#### \\boxed{18", "18", 0.0),
    ("\\boxed{20} no wait, \\boxed{18", "18", 0.0),  # cut off inside its last answer
    ("Final Answer: 20\n\nCheck: 9 eggs * $2 = $18.", "18", 0.0),
    ("**Answer:** 18\n\nExplanation: she eats 3 eggs and bakes 4.", "18", 1.0),
    # an "answer is" clause that names no one answer: negated, or hedged in brackets
    ("The answer is not 18", "18", 0.0),
    ("The answer is not 18, it is 17", "18", 0.0),
    ("The answer is 17 (or 18)", "18", 0.0),
    ("Final Answer: 17 (or maybe 18)", "18", 0.0),
    ("The answer is 18, as calculated above.", "18", 1.0),
    ("The answer is 72 clips, since she sold 24 in May.", "72", 1.0),
    ("The answer is $18, as calculated above.", "18", 1.0),  # a currency sign, not math
    # "Answer:" marks an answer where it opens a line, not in prose
    ("The answer is 18.\nCheck the answer: 20 eggs would be wrong.", "18", 1.0),
    ("Answer: 18 dollars a day, she makes.", "18", 1.0),
    # a few-shot "Answer:" opening the working is no marker; the last line's is
    (
        "Answer: Let's think step by step.\nShe keeps 16 - 3 - 4 = 9, so she makes 9 * 2 = 18.",
        "18",
        1.0,
    ),
    ("She keeps 9 eggs.\nAnswer: 18", "18", 1.0),
    ("Answer: 18\n\nExplanation: she eats 3 eggs.", "18", 1.0),  # before a number
    ("#### Answer: 20\n\nJanet makes $18.", "18", 0.0),  # a heading named Answer
    ("Answer: Janet makes $18 every day.", "18", 1.0),  # no marker: the whole response
    # "$N$" is math, and a clause after it ends at its comma
    ("The answer is $3$, since 3 is odd.", "3", 1.0),
    ("So the answer is $18$, because she sells 9 eggs at $2 each.", "18", 1.0),
    ("The answer is 72; she sold 24 in May.", "24", 0.0),  # a semicolon ends the clause
]


@pytest.mark.parametrize(("response", "reference", "expected"), ANSWER_PART_CASES)
def test_where_the_final_answer_is_read(response: str, reference: str, expected: float) -> None:
    assert math_verify(response, reference) == expected
    assert numeric(response, reference) == expected


@pytest.mark.parametrize(
    ("response", "reference"),
    [
        ("We need to compute $\\frac{1}{2} + \\frac{1}{4}$.", "\\frac{3}{4}"),  # restated
        ("Compute $\\dbinom{10}{5}$.", "252"),
        ("Janet sells 16 - 3 - 4 = 9 eggs at $2 each, so she makes 9 * 2", "18"),  # cut off
        ("So the total is $5!$", "120"),
        ("Find $N = \\binom{10}{5}$.", "252"),  # an equation restating the question
        ("Compute $\\sqrt{16}$.", "4"),  # a root to take
        # marked: boxing the question's expression is no answer either
        ("\\boxed{9 * 2}", "18"),
        ("\\boxed{48+24}", "72"),
        ("\\boxed{\\binom{10}{5}}", "252"),
        ("The answer is 99^2.", "9801"),
        ("#### 48+24", "72"),
    ],
)
def test_a_computation_left_undone_is_no_answer(response: str, reference: str) -> None:
    assert math_verify(response, reference) == 0.0


def test_expressions_read_as_written() -> None:
    """Holding a variable, an expression is read as written; so is one that shows its result,
    an exact form, scientific notation, a reference that is itself an expression, and Markdown
    bold."""
    assert math_verify("\\boxed{1.5 \\times 10^3}", "1500") == 1.0
    assert math_verify("\\boxed{10^{-2}}", "0.01") == 1.0
    assert math_verify("\\boxed{30^\\circ}", "30") == 1.0  # degrees: no power
    assert math_verify("The angle is $90^{\\circ}$.", "90") == 1.0
    assert math_verify("\\boxed{2^{10}}", "2^{10}") == 1.0
    assert math_verify("The total is **72**.", "72") == 1.0
    assert math_verify("Janet makes $9 \\times 2 = 18$ dollars a day.", "18") == 1.0
    assert math_verify("The maximum value is $2+\\sqrt{3}$.", "2+\\sqrt{3}") == 1.0
    assert math_verify("So there are $2^{10}$ subsets.", "2^{10}") == 1.0
    assert math_verify("So the roots are $2$ and $-3$.", "2, -3") == 1.0
    assert math_verify("48 + 24 = 72 clips.\n**72**", "72") == 1.0
    assert math_verify("So the polynomial is $x^2+1$.", "x^2+1") == 1.0
    assert math_verify("She makes $18 every day.", "18") == 1.0


@pytest.mark.parametrize(
    ("response", "reference", "expected"),
    [
        # integers are compared exactly: rel_tol is for rounded decimals
        ("\\boxed{1000001}", "1000000", 0.0),
        ("#### 123456789", "123456788", 0.0),
        ("\\boxed{1000000.0000001}", "1000000", 1.0),
        # a marked answer of several numbers is not its last one
        ("\\boxed{17 \\text{ or } 18}", "18", 0.0),
        ("\\boxed{2, 3, 4, 5, 6}", "6", 0.0),
        ("#### 17, 18", "18", 0.0),
        ("The answer is 20, which is more than 18.", "18", 0.0),
        ("The answer is 20, which is more than 18.", "20", 1.0),
        ("The answer is 9 * 2 = 18 dollars.", "18", 1.0),  # the value after the last "="
        ("The answer is 7 dozen.", "7", 1.0),  # "how many dozen": the number as written
        ("The answer is 18, or maybe 20.", "18", 0.0),  # a hedge goes on with the answer
        ("The answer isn't 20; she makes 18.", "18", 1.0),  # "isn't" marks no answer
        # written without LaTeX, pi, a root or a power is more than its number
        ("\\boxed{4π}", "4", 0.0),
        ("\\boxed{√2}", "2", 0.0),
        ("The answer is sqrt(2)", "2", 0.0),
        ("\\boxed{2²}", "2", 0.0),
        # a vulgar fraction is its value, after a whole number a mixed number's
        ("\\boxed{1½}", "1", 0.0),
        ("\\boxed{1½}", "1.5", 1.0),
        ("The answer is 2¾ cups.", "2.75", 1.0),
        ("\\boxed{-1½}", "-1.5", 1.0),
        ("\\boxed{¾}", "0.75", 1.0),
        ("The answer is 3 pieces", "3", 1.0),  # "pi" only as a word
        ("The answer is 4 pi", "4", 0.0),
        ("The answer is pi/2", "2", 0.0),
        ("sqrt 2", "2", 0.0),
        # a unit's square or cube in superscript digits is the unit's, as in LaTeX
        ("#### 48 m²", "48", 1.0),
        ("The area is 5 cm²", "5", 1.0),
        ("#### 3x²", "3", 0.0),
    ],
)
def test_numeric_reads_one_value(response: str, reference: str, expected: float) -> None:
    assert numeric(response, reference) == expected


@pytest.mark.parametrize("reference", ["3:30", "(3, 4)", "2, -3", "[-2,7]", "2 hours 30 minutes"])
def test_numeric_reference_of_several_numbers_is_bad(reference: str) -> None:
    with pytest.raises(BadReference, match="numbers, not one"):
        numeric("3", reference)


def test_numeric_tolerance_and_bad_reference() -> None:
    assert numeric("1.001", "1", rel_tol=1e-2) == 1.0
    assert numeric("0.0000001", "0", abs_tol=1e-6) == 1.0
    assert last_number("between 3 and 4.5 units") == 4.5
    with pytest.raises(ValueError, match="contains no number"):
        numeric("1", "none")
    with pytest.raises(ValueError, match="contains no number"):
        numeric("2", "CO2")
    with pytest.raises(ValueError, match="is an expression, not a plain number"):
        numeric("2", "\\sqrt{2}")


@pytest.mark.parametrize("reference", ["x > 5", "x >= 5", "x \u2265 5", "x \\geq 5"])
def test_numeric_inequality_reference_is_bad(reference: str) -> None:
    with pytest.raises(BadReference, match="is an expression, not a plain number"):
        numeric("5", reference)


@pytest.mark.parametrize(
    ("response", "reference", "expected"),
    [
        ("The answer is (B)", "B", 1.0),
        ("Answer: C", "(C)", 1.0),
        ("the correct answer is **D**.", "d", 1.0),
        ("\\boxed{E}", "E", 1.0),
        ("\\boxed{\\text{(A)}}", "A", 1.0),
        ("B", "B", 1.0),
        ("(C).", "C", 1.0),
        ("Not (A) but (B)", "B", 1.0),
        # the boxed final answer wins over an "answer B" or "answer is (B)" in the reasoning
        ("Looking at answer B, it fails. \\boxed{C}", "C", 1.0),
        ("So the answer is (B). Wait, wrong.\nFinal Answer: \\boxed{C}", "C", 1.0),
        ("The answer is (B)", "A", 0.0),
        ("A bit of thought, then nothing", "A", 0.0),
        ("The answer is Because", "B", 0.0),
        # a lower-case pick, where it cannot be an article or a step's label
        ("b", "B", 1.0),
        ("answer: b", "B", 1.0),
        ("the answer is (b)", "B", 1.0),
        ("\\boxed{c}", "C", 1.0),
        ("The answer is a number larger than 3", "A", 0.0),
        ("(a) first, (b) second", "B", 0.0),
        # after the last </think>; nothing while a <think> is open
        ("<think>maybe \\boxed{B}</think>The answer is (C)", "C", 1.0),
        ("<think>maybe \\boxed{B}, let me check (C", "B", 0.0),
        # a pick that goes on with other letters hedges, whatever the reference
        ("The answer is A, B, C or D.", "A", 0.0),
        ("Answer: A and C", "A", 0.0),
        ("The answer is (A) or (C)", "A", 0.0),
        ("The answer is (A) or (C)", "C", 0.0),
        ("The answer is A/B", "A", 0.0),
        ("The answer is B, a prime.", "B", 1.0),  # a word goes on, not a letter
        # other ways of saying the pick
        ("The correct option is C.", "C", 1.0),
        ("I choose C.", "C", 1.0),
        ("C is correct.", "C", 1.0),
        ("Options (A) and (B) are wrong, so C.", "C", 1.0),
        # a bare pick beside another, or one hedged after its bold
        ("(A) or (C)", "C", 0.0),
        ("answer: **B**, or maybe C", "B", 0.0),
        # the last pick wins: a phrase earlier in the reasoning does not
        ("Let me first consider option A. It fails. The result is 4, which is (C).", "C", 1.0),
        ("I thought A is correct, but actually it is (B).", "B", 1.0),
        ("In triangle ABC, A is the right angle. The result is (D).", "D", 1.0),
        # options walked through pick none
        ("Option A: 3, wrong. Option D: 9, wrong.", "D", 0.0),
        ("A is correct? No. B is correct? No.", "B", 0.0),
        # a pick, then the other options explained in brackets: the pick stands
        ("I choose C. Checking: (D) fails.", "C", 1.0),
        ("I choose C. Checking: (D) fails.", "D", 0.0),
        ("The correct option is C.\n\nWhy not the others:\n- (A) is too small.", "C", 1.0),
        # a letter the sentence goes on about is no second pick
        ("The answer is C, A is wrong.", "C", 1.0),
        ("The answer is C and B is a distractor.", "C", 1.0),
    ],
)
def test_multiple_choice(response: str, reference: str, expected: float) -> None:
    assert multiple_choice(response, reference) == expected


def test_multiple_choice_bad_reference() -> None:
    assert choice_letter("nothing") is None
    with pytest.raises(ValueError, match="not a choice letter"):
        multiple_choice("A", "42")


# ----------------------------------------------------------------------------- the runner


@pytest.fixture
def worker_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """The verifiers here are imported by module name ("bad_verifiers:raising"), in this process
    and in process workers: put tests/ on sys.path (which spawned workers inherit) and on
    PYTHONPATH (for any other start method)."""
    monkeypatch.syspath_prepend(TESTS_DIR)
    existing = os.environ.get("PYTHONPATH")
    monkeypatch.setenv("PYTHONPATH", TESTS_DIR + (os.pathsep + existing if existing else ""))


NO_SANDBOX = sandbox.unavailable_reason()
needs_sandbox = pytest.mark.skipif(NO_SANDBOX is not None, reason=f"no sandbox: {NO_SANDBOX}")
ISOLATIONS = ["inline", "process", pytest.param("sandbox", marks=needs_sandbox)]
WORKER_ISOLATIONS = ["process", pytest.param("sandbox", marks=needs_sandbox)]


@pytest.fixture(params=ISOLATIONS)
def isolation(request: pytest.FixtureRequest, worker_path: None) -> str:
    return request.param


@pytest.fixture(params=WORKER_ISOLATIONS)
def worker_isolation(request: pytest.FixtureRequest, worker_path: None) -> str:
    return request.param


@pytest.mark.parametrize(
    ("spec", "timeout_s", "logged"),
    [
        ("bad_verifiers:raising", 0.5, "RuntimeError: this verifier always fails"),
        # an exception whose str() fails is still counted
        ("bad_verifiers:raises_unprintable", 2.0, "Unprintable: <unprintable Unprintable>"),
    ],
    ids=["raising", "unprintable"],
)
def test_raising_verifier_scores_zero_and_counts(
    isolation: str, spec: str, timeout_s: float, logged: str
) -> None:
    v = Verifier(spec, timeout_s=timeout_s, isolation=isolation)
    try:
        assert v.score(["1", "2"], ["1", "2"], ["q0", "q1"]) == [0.0, 0.0]
    finally:
        v.close()
    assert (v.stats.calls, v.stats.errors, v.stats.timeouts) == (2, 2, 0)
    assert logged in v.stats.logged[0]


def test_what_a_verifier_prints_goes_to_stderr(
    isolation: str, capfd: pytest.CaptureFixture[str]
) -> None:
    v = Verifier("bad_verifiers:prints", timeout_s=5.0, isolation=isolation)
    try:
        assert v.score_one("4", "4", "q0") == 1.0
    finally:
        v.close()
    out, err = capfd.readouterr()
    assert out == ""  # a command's result on stdout stays a result
    assert "checking '4' against '4'" in err  # in every isolation, whenever the worker ends


def test_a_verifiers_code_is_found_where_an_editable_install_puts_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "editable_checks"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "checks.py").write_text("def score(response, reference):\n    return 1.0\n")

    class EditableFinder(importlib.abc.MetaPathFinder):  # as setuptools' _TopLevelFinder
        def find_spec(self, name: str, path: object = None, target: object = None) -> object:
            if name != package.name:
                return None
            return importlib.util.spec_from_file_location(
                name, package / "__init__.py", submodule_search_locations=[str(package)]
            )

    monkeypatch.setattr(sys, "meta_path", [*sys.meta_path, EditableFinder()])
    spec = "editable_checks.checks:score"
    assert verifier_code_sha256(spec) == file_sha256(package / "checks.py")
    assert "editable_checks" not in sys.modules  # found, not imported
    assert verifier_code_sha256("sgpo.verifiers:numeric") is None  # sgpo's own: its version's


def test_inline_calls_off_the_main_thread_leave_stdout_alone() -> None:
    # sys.stdout is the process's: redirecting it from threads that overlap left it on stderr
    v = Verifier("bad_verifiers:prints", timeout_s=5.0, isolation="inline")
    stdout = sys.stdout
    with ThreadPoolExecutor(4) as pool:
        scores = list(pool.map(lambda i: v.score_one("4", "4", f"q{i}"), range(16)))
    assert scores == [1.0] * 16 and sys.stdout is stdout


def test_hanging_verifier_times_out_and_recovers(isolation: str) -> None:
    v = Verifier("bad_verifiers:hanging", timeout_s=0.5, isolation=isolation)
    try:
        assert v.score_one("a", "a", "warm-up") == 1.0  # process: the worker is up
        start = time.perf_counter()
        assert v.score_one("hang", "hang", "q-hang") == 0.0
        assert time.perf_counter() - start < 5
        assert v.score_one("b", "b", "after") == 1.0  # process: a fresh worker
    finally:
        v.close()
    assert (v.stats.calls, v.stats.errors, v.stats.timeouts) == (3, 0, 1)
    assert "q-hang" in v.stats.logged[0]


def test_network_verifier_scores_zero_and_counts(isolation: str) -> None:
    # Nothing listens on port 9 (sandbox: there is no network at all; see test_sandbox.py).
    v = Verifier("bad_verifiers:network", timeout_s=3.0, isolation=isolation)
    try:
        assert v.score_one("1", "1", "q0") == 0.0
    finally:
        v.close()
    assert (v.stats.errors, v.stats.timeouts) == (1, 0)


def test_non_numeric_score_is_an_error(isolation: str) -> None:
    v = Verifier("bad_verifiers:not_a_number", timeout_s=0.5, isolation=isolation)
    try:
        assert v.score_one("1", "1", "q0") == 0.0
    finally:
        v.close()
    assert v.stats.errors == 1


def test_math_verify_through_the_runner(isolation: str) -> None:
    v = Verifier("sgpo.verifiers:math_verify", timeout_s=5.0, isolation=isolation)
    try:
        scores = v.score(
            ["#### 1,000", "\\boxed{\\frac{1}{2}}", "The answer is 18 dollars.", "#### 7"],
            ["1000", "0.5", "18", "8"],
            ["a", "b", "c", "d"],
        )
    finally:
        v.close()
    assert scores == [1.0, 1.0, 1.0, 0.0]
    assert (v.stats.errors, v.stats.timeouts) == (0, 0)


def test_math_verify_keeps_the_inline_timer_armed(worker_path: None) -> None:
    # math-verify's own timeouts call signal.alarm(0), which would cancel the runner's timer.
    v = Verifier("bad_verifiers:math_then_hang", timeout_s=0.5, isolation="inline")
    start = time.perf_counter()
    assert v.score_one("\\boxed{1}", "1", "q0") == 0.0
    assert time.perf_counter() - start < 5
    assert v.stats.timeouts == 1


def test_bad_path_fails_fast(isolation: str) -> None:
    with pytest.raises(ValueError, match="no_such_module"):
        Verifier("no_such_module:score", timeout_s=1.0, isolation=isolation)


# ----------------------------------------------------------------------------- exits (issue 13.4)


def test_sys_exit_in_a_verifier_scores_zero_and_the_run_goes_on(isolation: str) -> None:
    v = Verifier("bad_verifiers:exits", timeout_s=2.0, isolation=isolation)
    try:
        assert v.score(["exit", "a"], ["exit", "a"], ["q-exit", "q-after"]) == [0.0, 1.0]
    finally:
        v.close()
    assert (v.stats.calls, v.stats.errors) == (2, 1)
    assert "SystemExit" in v.stats.logged[0]


def test_os_exit_kills_only_the_worker(worker_isolation: str) -> None:
    # Inline, os._exit ends the process and nothing in it can stop that (README says so).
    v = Verifier("bad_verifiers:exits", timeout_s=2.0, isolation=worker_isolation)
    try:
        assert v.score(["hard-exit", "a"], ["x", "a"], ["q-exit", "q-after"]) == [0.0, 1.0]
    finally:
        v.close()
    assert v.stats.errors == 1
    assert "worker died" in v.stats.logged[0]


def verifier_workers() -> set[int]:
    """This process's verifier_worker children (a sandboxed one's bwrap parent included)."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (stat.parent / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):  # ended while read
            continue
        if ppid == os.getpid() and b"sgpo.verifier_worker" in cmdline:
            found.add(int(stat.parent.name))
    return found


def test_a_worker_never_closed_ends_with_its_verifier(
    worker_isolation: str, tmp_path: Path
) -> None:
    before = verifier_workers()
    v = Verifier("bad_verifiers:coin_flip", timeout_s=2.0, isolation=worker_isolation)
    v.score(["a"], ["1"], ["q"])
    assert len(verifier_workers() - before) == 1
    del v  # not closed: a run that failed before it closed its verifier
    gc.collect()
    assert verifier_workers() - before == set()
    # as when a profile's model does not load after its verifier was built
    tree = tiny_tree(tmp_path / "models", task={"verifier_isolation": worker_isolation})
    tree["model"]["name_or_path"] = str(tmp_path / "no" / "model")
    with pytest.raises(ConfigError, match="no such directory"):
        run_profile(RunConfig.model_validate(tree), tmp_path / "profile")
    gc.collect()
    assert verifier_workers() - before == set()


def test_a_fork_ending_leaves_its_parents_worker_alone(worker_isolation: str) -> None:
    # a forked child that exits normally runs the finalizers it inherited
    v = Verifier("bad_verifiers:coin_flip", timeout_s=2.0, isolation=worker_isolation)
    try:
        v.score(["a"], ["1"], ["q"])
        child = os.fork()
        if child == 0:
            try:
                v._worker.kill()  # what the child's exit would run: not its worker to kill
            finally:
                os._exit(0)
        assert os.waitpid(child, 0)[1] == 0
        assert len(v.score(["a", "b"], ["1", "2"], ["q1", "q2"])) == 2
        assert v.stats.errors == 0
    finally:
        v.close()


# ----------------------------------------------------------------------------- rewards (13.7)


def test_reward_contract(isolation: str) -> None:
    v = Verifier("bad_verifiers:returns", timeout_s=2.0, isolation=isolation)
    bad = ["two", "minus-one", "inf", "nan", "string", "none"]
    good = {"half": 0.5, "true": 1.0, "numpy": 0.25, "numpy-bool": 1.0}
    try:
        assert v.score(bad, bad, bad) == [0.0] * len(bad)
        assert v.score(list(good), list(good), list(good)) == list(good.values())
    finally:
        v.close()
    assert (v.stats.errors, v.stats.timeouts) == (len(bad), 0)
    assert "outside the reward range [0.0, 1.0]" in v.stats.logged[0]
    assert "returned str '1', not a number" in v.stats.logged[4]


def test_an_alarm_while_disarming_still_disarms(
    worker_path: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The timeout's alarm can fire after the verifier returned, before its timers are off: the
    disarming must still end with no timer armed and the old SIGALRM handler back."""
    import signal

    import sgpo.verify

    real_setitimer = signal.setitimer
    fired = []

    def alarm_once_while_disarming(which: int, seconds: float, interval: float = 0.0) -> tuple:
        if seconds == 0 and not fired:
            fired.append(which)
            raise sgpo.verify.VerifierTimeout  # as on_alarm would, before `finished` was set
        return real_setitimer(which, seconds, interval)

    before = signal.getsignal(signal.SIGALRM)
    v = Verifier("bad_verifiers:returns", timeout_s=2.0, isolation="inline")
    monkeypatch.setattr(sgpo.verify.signal, "setitimer", alarm_once_while_disarming)
    assert v.score(["half"], [""], ["q"]) == [0.5]
    monkeypatch.undo()
    assert fired and signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    assert signal.getitimer(signal.ITIMER_VIRTUAL) == (0.0, 0.0)
    assert signal.getsignal(signal.SIGALRM) is before


def test_declared_reward_range_is_rescaled(worker_path: None) -> None:
    v = Verifier("bad_verifiers:returns", timeout_s=2.0, reward_range=(-1.0, 3.0))
    assert v.score(["minus-one", "two", "inf"], ["", "", ""], ["a", "b", "c"]) == [0.0, 0.75, 0.0]
    assert v.stats.errors == 1
    with pytest.raises(ValueError, match="low < high"):
        Verifier("bad_verifiers:returns", reward_range=(1.0, 1.0))


# ----------------------------------------------------------------------------- timeouts (13.9)


def test_a_swallowed_timeout_is_still_a_timeout(isolation: str) -> None:
    v = Verifier("bad_verifiers:swallows_once", timeout_s=0.5, isolation=isolation)
    try:
        start = time.perf_counter()
        assert v.score_one("a", "a", "q0") == 0.0  # a late 1.0 does not count
        assert time.perf_counter() - start < 3
    finally:
        v.close()
    assert (v.stats.errors, v.stats.timeouts) == (0, 1)


@pytest.mark.parametrize("name", ["swallows_always", "c_loop"])
def test_workers_bound_every_call(worker_isolation: str, name: str) -> None:
    # Each hang kills the worker; the next call's fresh worker must not stretch the bound.
    v = Verifier(f"bad_verifiers:{name}", timeout_s=0.5, isolation=worker_isolation)
    try:
        for query in ("q0", "q1", "q2"):
            start = time.perf_counter()
            assert v.score_one("a", "a", query) == 0.0
            assert time.perf_counter() - start < 0.5 + 3  # was 0.5 + 30 per fresh worker
    finally:
        v.close()
    assert v.stats.timeouts == 3


@pytest.mark.parametrize("name", ["swallows_always", "c_loop"])
def test_inline_verifier_that_cannot_be_interrupted_ends_the_run_loudly(
    name: str, tmp_path: Path
) -> None:
    # Nothing in the process can stop C code or a verifier that catches every interrupt: at
    # the hard deadline (5 s after the timeout; for C code in CPU time) the process prints the
    # verifier's stack and ends (status 1, or killed by SIGVTALRM).
    script = (
        "import sys; sys.path.insert(0, sys.argv[1])\n"
        "from sgpo.verify import Verifier\n"
        f"v = Verifier('bad_verifiers:{name}', timeout_s=0.5)\n"
        "print('score', v.score_one('a', 'a', 'q0'))\n"
    )
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-c", script, TESTS_DIR], capture_output=True, text=True, timeout=60
    )
    assert time.perf_counter() - start < 0.5 + 5 + 10
    assert result.returncode in (1, -signal.SIGVTALRM)
    assert "score" not in result.stdout
    assert f"in {name}" in result.stderr


def test_math_verify_is_imported_with_the_verifiers_not_inside_a_timed_call() -> None:
    # a first import cut short by a verifier timeout left a half-built sympy behind
    import subprocess
    import sys

    code = "import sys, sgpo.verifiers; print('math_verify.grader' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"


@pytest.mark.parametrize("timeout_s", [1e10, 0.0, -1.0, float("nan")])
def test_a_timeout_the_os_timers_cannot_take_is_refused_not_blamed_on_the_verifier(
    timeout_s: float,
) -> None:
    """A huge timeout made every call an OverflowError, counted as the verifier's errors."""
    from sgpo.config import RunConfig

    with pytest.raises(ValueError, match=r"verifier timeout must be in \(0, 86400\] seconds"):
        Verifier("sgpo.verifiers:math_verify", timeout_s=timeout_s)
    with pytest.raises(ValueError, match="verifier_timeout_s"):
        RunConfig.model_validate({"task": {"verifier_timeout_s": timeout_s}})


@pytest.mark.parametrize("reference", ["4π", "sqrt(2)", "3²", "√2"])
def test_numeric_reference_written_as_a_unicode_expression_is_bad(reference: str) -> None:
    with pytest.raises(BadReference, match="is an expression, not a plain number"):
        numeric("3", reference)
