"""
Reading MATH answers: where a response states its final answer, and how two answers are brought to
one spelling and one shape before reward.is_equiv compares them. Stdlib; what only sympy can decide
goes to support/sympy_worker.py, in a child process with a deadline.

    extract_answer(response)        the final answer of a solution, or None
    last_boxed(text)                the contents of the last \\boxed{}
    normalize_answer(answer)        the rewrite rules below, applied in order
    answer_shape(answer)            ("matrix", rows) ("union", ...) ("tuple", ...) ("set", items) ("value", text)
    same_shape(pred, gold, deadline)    two shapes, item by item, values exactly or by sympy
    decimal_comma(comma, point)     1000,99 is 1000.99 when the other answer is a decimal

Where the answer is (extract_answer): after the last marker (_ANSWER_MARKER): "final answer is",
"Final Answer:", "The answer is:" (MetaMath, WizardMath; without the colon it is prose), "# Answer"
on a line of its own with the answer below (PRM800K), or "#### N" (GSM8K; a line with only a
number, so a markdown heading "#### 3. Solve" is not one); then a $X$ or \\[X\\] span, or up to
where the response runs on (a new sentence, a chat template's next turn, ", because ..."),
markdown ** dropped; a sentence ("The volume of the cube is 216 cubic inches.") answers with the
value its verb states, only if that is its one number or math span, a unit at most follows it
and nothing negates it; or the last \\boxed{}, together with the boxes just before it that only glue
separates (`\\boxed{1} and \\boxed{2}` is the list 1, 2). A box after the marker wins. "The answer is
5" alone is not an answer.

Known limits: the question is not seen, so units, "simplest form" and radians vs degrees are
judged on the value alone; a label is dropped whatever it names (x = 5 answers "find y" too);
\\log_b, \\sum, repeating decimals (0.\\overline{3}), answers in free text without a box or
a marker, a sentence with two numbers ("2 hours and 30 minutes"), "or" between boxes (MATH
uses it for two spellings of one value), a choice letter without brackets (D. 4(x+1)=4x) and
inequalities in |x - a| are not read. A test per rule, with its near misses: tests/test_reward_forms.py.
"""

import re
from fractions import Fraction

from support.sympy_worker import MATH_FUNCTIONS as _MATH_WORDS
from support.sympy_worker import sympy_says_equal as _sympy_says_equal

# ---- Extraction --------------------------------------------------------------------------------


def _matching_close(text: str, start: int, opens: str = "{", closes: str = "}") -> int:
    """Index of the bracket closing the one at text[start], nesting included; -1 if unbalanced."""
    depth = 0
    for i in range(start, len(text)):
        depth += text[i] in opens
        depth -= text[i] in closes
        if depth == 0:
            return i
    return -1


def _boxes(text: str) -> list[tuple[int, int, str]]:
    """(start, end, contents) of every \\boxed{...} / \\fbox{...}; `\\boxed 5` (no braces) also counts."""
    found = []
    for match in re.finditer(r"\\(?:boxed|fbox)", text):
        rest_at = match.end() + len(text[match.end():]) - len(text[match.end():].lstrip())
        if text.startswith("{", rest_at):
            close = _matching_close(text, rest_at)
            if close > 0:
                found.append((match.start(), close + 1, text[rest_at + 1 : close]))
        elif bare := re.match(r"\s+([^\s$]+)", text[match.end():]):
            found.append((match.start(), match.end() + bare.end(), bare[1]))
    return found


def last_boxed(text: str) -> str | None:
    """Contents of the last \\boxed{...} or \\fbox{...}; None if it has no balanced braces."""
    boxes = _boxes(text)
    at = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    return boxes[-1][2] if boxes and boxes[-1][0] == at else None


# What may stand between two boxes that answer together: `\boxed{1}, \boxed{2}`, `\boxed{-2} \quad
# \text{and} \quad \boxed{1}`, `k = \boxed{45}, n = \boxed{2}`. Any other word ("then", "for part
# (b)") means the earlier box was a step on the way. "or" is not glue either: MATH writes
# `\boxed{15\frac{39}{40}}, or \boxed{\frac{639}{40}}` for one value in two spellings.
_BOX_GLUE = re.compile(r"(?:\s|\$|\\[()\[\]]|[,;.]|\\q?quad|\\[,;! ]|\\text\{\s*(?:and|,)?\s*\}|\band\b"
                       r"|[A-Za-z](?:_\{?\w+\}?)?\s*=)*")


def _boxed_answer(text: str) -> str | None:
    """The last box, together with the boxes just before it that only glue separates; several
    boxes become one list: `\\boxed{1} and \\boxed{2}` -> '1, 2'. None if the last box is broken."""
    last = last_boxed(text)
    if last is None:
        return None
    boxes = _boxes(text)
    group = [boxes[-1]]
    for box in reversed(boxes[:-1]):
        between = text[box[1] : group[0][0]]
        if len(between) > 40 or not _BOX_GLUE.fullmatch(between):
            break
        group.insert(0, box)
    return ", ".join(contents for _, _, contents in group)


# Where a response that runs on after its final answer stops answering: a chat template's next
# turn (the model did not stop), a new sentence, or a reason (", because 2 + 3 = 5").
_ANSWER_ENDS = re.compile(r"I hope it is correct|<\||</s>|\n|\b(?:Human|User|Assistant|Problem):|(?-i:\.\s+(?=[A-Z]))"
                          r"|,?\s+(?:because|since|which)\s", re.IGNORECASE)


# Where a final answer is announced, in the phrasings of the model families we grade:
_ANSWER_MARKER = re.compile(
    r"final answer(?:\s+is|\*{0,2}\s*:)"  # "The final answer is $X$" (the paper's prompt), "**Final Answer:** X"
    r"|\bthe answer is\s*:"  # "The answer is: X" (MetaMath, WizardMath); without the colon it is prose
    r"|^#{1,6}[ \t]*(?:final[ \t]+)?answer[ \t]*:?[ \t]*$"  # "# Answer" on its own line, X below (PRM800K)
    # "#### X" (GSM8K), only when the line holds nothing but a number: "#### 3. Solve for x" is a
    # markdown heading, and reading its 3 would pay a response that never answered
    r"|^####(?=[ \t]*[-\\$]*[ \t]*\d[\d,./]*[ \t]*%?[ \t]*$)",
    re.IGNORECASE | re.MULTILINE)

# In a sentence, the math is a $...$ or \(...\) span or a number (1,000, -2.5, 3/4, and the 5 of 5th).
_MATH_IN_SENTENCE = re.compile(r"\$[^$]+\$|\\\(.+?\\\)|-?\d[\d,]*(?:\.\d+)?(?:/\d+)?")
_PROSE = re.compile(r"[A-Za-z]{2,}(?:\s+[A-Za-z]+){2,}")  # three words in a row: "of the cube"
# "... is 216 cubic inches": a value stated by the sentence's verb, with at most a unit after it
_STATED_VALUE = re.compile(r"(?:\b(?:is|are|was|were|equals?)|=)\s+(?:(?:about|approximately|exactly)\s+)?"
                           r"\\?\$?(\$[^$]+\$|\\\(.+?\\\)|-?\d[\d,]*(?:\.\d+)?(?:/\d+)?)((?:\s+[a-zA-Z]+){0,3})$")
_NEGATION = re.compile(r"\b(?:not|no|never|neither|nor)\b|n't\b", re.IGNORECASE)  # "is not 216"
# words after the number that make it an operand or a bound: "is 5 more than x", "is 2 times the width"
_NOT_A_UNIT = re.compile(r"\b(?:than|times|more|less|fewer|greater|smaller|plus|minus|of|and|or|to|by)\b",
                         re.IGNORECASE)


def _stated_value(sentence: str) -> str:
    """"The volume of the cube is 216 cubic inches" -> "216": an answer written as a sentence is the
    value its verb states, if that is the sentence's only number or math span and only a unit
    follows it. Otherwise ("is 2 hours and 30 minutes", "is twice 8", "is not 216", "3 x 4 is 12")
    the sentence stays whole and cannot match a number: a missed right answer, never a paid wrong one."""
    if len(sentence) > 300:  # no answer sentence is this long; the cap also bounds the regex work
        return sentence
    if not _PROSE.search(re.sub(r"\$[^$]*\$|\\\(.*?\\\)|\\text\{[^{}]*\}", " ", sentence)):
        return sentence  # not prose: `x = 2 or x = 3`, `5 cubic inches`
    stated = _STATED_VALUE.search(sentence)
    if not stated or len(_MATH_IN_SENTENCE.findall(sentence)) != 1 or _NEGATION.search(sentence) \
            or _NOT_A_UNIT.search(stated[2]):
        return sentence
    return stated[1].strip("$").removeprefix("\\(").removesuffix("\\)")


def _announced_answer(after: str) -> str | None:
    """The answer that follows a marker: a $X$ or \\[X\\] span, or the text up to where the response
    runs on (a new sentence, a new line, a chat template's next turn, ", because ...")."""
    answer = re.sub(r"^[\s:*]+", "", after)  # "The final answer is: **5**", "# Answer\n\n5"
    span = re.match(r"\$((?:[^$\\]|\\.)+)\$(?!\s*(?:,|and|or)\s*\$)", answer)  # $X$ and whatever follows
    display = re.match(r"\\\[(.+?)\\\]", answer, re.DOTALL)  # \[ X \], on lines of its own or not
    if span or display:
        answer = span[1] if span else display[1].strip()
    else:
        answer = _stated_value(_ANSWER_ENDS.split(answer, maxsplit=1)[0].strip().rstrip("."))
    answer = answer.strip().rstrip(".").strip().strip("$*").removeprefix("\\(").removesuffix("\\)")
    return answer.strip().rstrip(".").strip() or None


def extract_answer(response: str) -> str | None:
    """The final answer: the last marker's answer or the last box(es), whichever comes last; else None.

    The paper's prompt asks for "Final Answer: The final answer is $X$. I hope it is correct.";
    MATH reference solutions put the answer in \\boxed{X}; other model families write "The answer
    is: X", "# Answer" and X on the next line, or "#### X" (_ANSWER_MARKER). Several boxes with
    only glue between them (`\\boxed{1} and \\boxed{2}`) are one list answer.
    """
    if not response:
        return None
    marker_at = max((m.end() for m in _ANSWER_MARKER.finditer(response)), default=-1)
    if max(response.rfind("\\boxed"), response.rfind("\\fbox")) > marker_at:
        return _boxed_answer(response)  # "The final answer is $\boxed{5}$" lands here too
    return _announced_answer(response[marker_at:]) if marker_at >= 0 else None


# ---- Normalization: rewrite rules applied in order, each with its reason -----------------------

_UNIT = r"(?:square\s+|cubic\s+)?[a-zA-Z]+(?:\s+[a-zA-Z]+)*(?:/[a-zA-Z]+)?\s*(?:\^\{?\d\}?)?\s*$"
_NORMALIZE_RULES = [(re.compile(pattern), replacement) for pattern, replacement in [
    # explicit thousands separators: 18{,}360, 10,\!080, 26\,000 are one number
    (r"(?<=\d)(?:\{,\}|,\\!\s*|\\,)(?=\d{3})", ""),
    # spacing commands never change a value; (?<!\\) keeps the \\ between matrix rows
    (r"(?<!\\)\\[!,;: ]|\\q?quad|~|\\displaystyle|\\textstyle", " "),
    # an escaped backslash, \\frac, is a command written inside a string (a \\ row break is never
    # followed by one of these names)
    (r"\\\\(?=(?:left|right|frac|dfrac|tfrac|sqrt|le|leq|ge|geq|pi|cdot|infty|in|boxed)(?![a-zA-Z]))", r"\\"),
    # \dfrac, \tfrac, \cfrac (and \dbinom) are display sizes of \frac (\binom)
    (r"\\[dtc](frac|binom)", r"\\\1"),
    # \left( \right] \bigl( only size the bracket
    (r"\\(?:left|right|[bB]igg?[lr]?)\b", ""),
    # degrees: MATH writes 90^\circ where the question already says "in degrees"
    (r"\^\s*\{\s*\\circ\s*\}|\^\s*\\circ|\\circ|°", ""),
    # percent and dollar signs (and $ math delimiters) are units, not values
    (r"\\?%|\\?\$", ""),
    # one spelling for every text-like command
    (r"\\(?:text(?:bf|rm|it|normal)?|mbox|mathrm|mathbf|mathit|operatorname)\s*\{", r"\\text{"),
    # a time of day is no unit to drop: 5\text{am}, 5 AM, 9\text{ a.m.} are 5am, 9am, never 5pm
    (r"(?<=\d)\s*(?:\\text\{\s*([aApP])\.?\s?[mM]\.?\s*\}|([aApP])\.?\s?[mM]\.?(?![a-zA-Z]))",
     lambda time: (time[1] or time[2]).lower() + "m"),
    # a \text{...} after a value, ending the answer or a list item, is a unit: 5.4 \text{ cents},
    # 864 \mbox{ inches}^2, 3 \text{ cm}, 4 \text{ cm} (km/h, m/s^2, \text{km}/\text{h} too); but
    # \text{A}, \text{B} is two answers: a unit follows a value, never a comma
    (r"(?<=[\w})])\s*\\text\{\s*[a-zA-Z][a-zA-Z ]*(?:/\s*[a-zA-Z]+)?\}\s*(?:\^\{?\d\}?)?"
     r"(?:\s*/\s*\\text\{\s*[a-zA-Z]+\}\s*(?:\^\{?\d\}?)?)?\s*(?=,|$)", ""),
    # bare words after a number too: 12 inches, 12\pi square units (but not 5 i or 2 pi)
    (r"(?<=[\d}])\s+(?!(?:pi|sqrt)\b)(?=[a-zA-Z]{2})" + _UNIT, ""),
    # any other \text{...} is the answer itself: \text{Evelyn} -> Evelyn
    (r"\\text\{([^{}]*)\}", r"\1"),
    # "2 or -3", "1 and -2", "(11,7)or(7,11)": a list of answers
    (r"\s+(?:or|and)\s+|(?<=[)\]}])\s*(?:or|and)\s*(?=[(\[{])", ","),
    # one spelling for the empty set and for what a model may print in unicode or words
    (r"\\varnothing|\\\{\s*\\\}", r"\\emptyset"), (r"\\mathbb\{R\}", r"(-\\infty,\\infty)"),
    (r"∞|(?<![a-zA-Z\\])infinity", r"\\infty "), (r"π", r"\\pi "), (r"−", "-"),
    (r"[×·]", r"\\cdot "), (r"√", r"\\sqrt"),
    # `\{x \mid x > 2\}` is `\{x | x > 2\}` (_set_builder reads it)
    (r"\\mid(?![a-zA-Z])", "|"),
    # `x \in [-2,7]`, `(x, y) = (1, 2)`: only the set or the tuple is the answer
    (r"^\s*(?:[a-zA-Z]\s*\\in|\(\s*[a-z](?:\s*,\s*[a-z])+\s*\)\s*=)\s*", ""),
    # one spelling per relation, for _as_intervals
    (r"\\leq?(?:slant)?(?![a-zA-Z])|<=|≤", "≤"), (r"\\geq?(?:slant)?(?![a-zA-Z])|>=|≥", "≥"),
    (r"\\lt(?![a-zA-Z])", "<"), (r"\\gt(?![a-zA-Z])", ">"),
    # whitespace only matters between two letters (\cot x, \pi r); drop the rest
    (r"\s+", " "), (r"(?<![a-zA-Z]) | (?![a-zA-Z])", ""),
    # \frac12, \frac 34, \frac9{19}, \frac{270}7, \sqrt2: brace the one-character arguments
    (r"\\frac([^{\\ ])([^{\\ ])", r"\\frac{\1}{\2}"), (r"\\frac([^{\\ ])\{", r"\\frac{\1}{"),
    (r"\\frac(\{[^{}]*\})([^{\\ ])", r"\\frac\1{\2}"), (r"\\sqrt([^{\[\\ ])", r"\\sqrt{\1}"),
    # x^{2} is x^2, 52_{8} is 52_8
    (r"([\^_])\{(\w)\}", r"\1\2"), (r"_\{(\d+)\}", r"_\1"),
    # a trailing full stop ends the sentence, not the number
    (r"\.$", ""),
]]


def _mixed_number(match: re.Match) -> str:
    """10\\frac{1}{12} is 10 + 1/12 in MATH, if the fraction is proper (2\\frac{3}{2} is not)."""
    whole, numerator, denominator = match.groups()
    if int(numerator) >= int(denominator):
        return match[0]
    return f"({whole}+\\frac{{{numerator}}}{{{denominator}}})"


def _brace_second_argument(answer: str) -> str:
    """\\frac{\\sqrt{3}}2 -> \\frac{\\sqrt{3}}{2}: a one-character denominator after a nested numerator
    (the rules above brace it only when the numerator has no braces of its own)."""
    at = answer.find("\\frac{")
    while at >= 0:
        close = _matching_close(answer, at + 5)
        if 0 < close < len(answer) - 1 and answer[close + 1].isalnum():
            answer = f"{answer[:close + 1]}{{{answer[close + 1]}}}{answer[close + 2:]}"
        at = answer.find("\\frac{", at + 1)
    return answer


def normalize_answer(answer: str) -> str:
    """A canonical string for one answer; see _NORMALIZE_RULES for each rule's reason."""
    answer = answer.strip()
    spaced_list = re.search(r"\d,\s+\d", answer)  # 32, 349 is a list; 32,349 a number
    if "\\boxed" in answer or "\\fbox" in answer:  # a gold answer written as a solution
        answer = _boxed_answer(answer) or answer
    for pattern, replacement in _NORMALIZE_RULES:
        answer = pattern.sub(replacement, answer)
    answer = _brace_second_argument(answer)
    answer = re.sub(r"(?<![\d.}^_a-zA-Z])(\d+)\\frac\{(\d+)\}\{(\d+)\}", _mixed_number, answer)
    if re.fullmatch(r"-?(?!0,)\d{1,3}(,\d{3})+(\.\d+)?", answer) and not spaced_list:  # 11,111,100, not 0,111
        answer = answer.replace(",", "")
    several = [len(_split_top_level(answer, separator)) > 1 for separator in ",;"]
    if several[1] and not several[0] or ";" in answer and not several[1]:  # 1; 2 and (0;1) are 1, 2 and (0,1)
        answer = answer.replace(";", ",")
    elif all(several):  # p=5,q=2;p=7,q=2: solutions of labelled values are the tuples (5,2),(7,2)
        solutions = [_split_top_level(part, ",") for part in _split_top_level(answer, ";")]
        answer = ",".join("(" + ",".join(_without_label(value) for value in values) + ")" for values in solutions)
    answer = _set_builder(answer) or _as_intervals(answer) or answer
    while answer[:1] == "{" and _matching_close(answer, 0) == len(answer) - 1:  # {5} is 5
        answer = answer[1:-1]
    if answer.startswith("\\{") and answer.endswith("\\}") and len(_split_top_level(answer[2:-2], ",")) == 1:
        answer = answer[2:-2]  # the one-element set \{3\} is the answer 3
    return answer


_BOUND_RELATION = re.compile(r"(≤|≥|<|>)")
_VARIABLE = re.compile(r"[a-zA-Z](?:\([a-zA-Z]\))?")  # x, f(x)


def _as_interval(inequality: str) -> str | None:
    """x≤5 -> (-\\infty,5], 5≥x -> (-\\infty,5], -2≤x<7 -> [-2,7), 0<f(x)<1 -> (0,1); else None.
    Open and closed ends are kept, so x<5 never equals (-\\infty,5]."""
    parts = _BOUND_RELATION.split(inequality)
    flipped = {"<": ">", ">": "<", "≤": "≥", "≥": "≤"}
    if any(re.fullmatch(r"\|[a-zA-Z]\|", part) for part in parts[::2]):
        return _as_absolute_interval(parts)
    if len(parts) == 3 and parts[0][:1] == "-" and _VARIABLE.fullmatch(parts[0][1:]) and \
            re.fullmatch(r"-?(?:\d+(?:\.\d+)?|\\frac\{\d+\}\{\d+\})", parts[2]):  # -x>-1 is x<1
        bound = parts[2][1:] if parts[2][:1] == "-" else "-" + parts[2]
        return _as_interval(parts[0][1:] + flipped[parts[1]] + bound)
    less = [op in "<≤" for op in parts[1::2]]
    ends = [("[" if op in "≤≥" else "(", "]" if op in "≤≥" else ")") for op in parts[1::2]]
    if len(parts) == 5 and _VARIABLE.fullmatch(parts[2]) and less[0] == less[1]:  # a<x<b, b>x>a
        low, high, (low_end, high_end) = (parts[0], parts[4], (ends[0][0], ends[1][1])) if less[0] else \
                                         (parts[4], parts[0], (ends[1][0], ends[0][1]))
    elif len(parts) == 3 and _VARIABLE.fullmatch(parts[0]):  # x<b, x>a
        low, high = ("-\\infty", parts[2]) if less[0] else (parts[2], "\\infty")
        low_end, high_end = ("(", ends[0][1]) if less[0] else (ends[0][0], ")")
    elif len(parts) == 3 and _VARIABLE.fullmatch(parts[2]):  # a<x, b>x
        low, high = (parts[0], "\\infty") if less[0] else ("-\\infty", parts[0])
        low_end, high_end = (ends[0][0], ")") if less[0] else ("(", ends[0][1])
    else:
        return None
    if not low or not high or _VARIABLE.fullmatch(low) or _VARIABLE.fullmatch(high):
        return None
    return f"{low_end}{low},{high}{high_end}"


def _as_absolute_interval(parts: list[str]) -> str | None:
    """|x|<5 -> (-5,5); |x|≥2 -> (-\\infty,-2]\\cup[2,\\infty); 1≤|z|<2 -> (-2,-1]\\cup[1,2).
    Only for |variable| and positive number bounds (ends kept); else None."""
    if len(parts) == 3 and not re.fullmatch(r"\|[a-zA-Z]\|", parts[0]):  # 5>|x| is |x|<5
        parts = [parts[2], {"<": ">", ">": "<", "≤": "≥", "≥": "≤"}[parts[1]], parts[0]]
    bounds = [parts[i] for i in range(0, len(parts), 2) if not re.fullmatch(r"\|[a-zA-Z]\|", parts[i])]
    if len(bounds) != len(parts) // 2 or any(not ((value := _as_fraction(b)) and value > 0) for b in bounds):
        return None
    closed = {op: op in "≤≥" for op in parts[1::2]}
    if len(parts) == 3:  # |x| < b or |x| > b
        b, op = parts[2], parts[1]
        if op in "<≤":
            return f"{'[' if closed[op] else '('}-{b},{b}{']' if closed[op] else ')'}"
        return f"(-\\infty,-{b}{']' if closed[op] else ')'}\\cup{'[' if closed[op] else '('}{b},\\infty)"
    if len(parts) == 5 and parts[1] in "<≤" and parts[3] in "<≤" and _as_fraction(parts[0]) < _as_fraction(parts[4]):
        a, b, low, high = parts[0], parts[4], parts[1] == "≤", parts[3] == "≤"  # a < |x| < b
        return (f"{'[' if high else '('}-{b},-{a}{']' if low else ')'}\\cup"
                f"{'[' if low else '('}{a},{b}{']' if high else ')'}")
    return None


def _set_builder(answer: str) -> str | None:
    """\\{x | x>2\\} -> (2,\\infty): the set of the x that satisfy inequalities in x alone is their
    interval or union, as `x > 2` is. Anything else (\\{x | x^2=4\\}, \\{x | y>2\\}) -> None."""
    builder = re.fullmatch(r"\\\{([a-zA-Z])(?:\\in\(-\\infty,\\infty\))?[|:](.+)\\\}", answer)
    if not builder or set(re.findall(r"[a-zA-Z]", re.sub(r"\\[a-zA-Z]+", "", builder[2]))) != {builder[1]}:
        return None
    return _as_intervals(builder[2])


def _as_intervals(answer: str) -> str | None:
    """An inequality, or several joined by `or` (now commas) or \\cup, as a union of intervals."""
    if not _BOUND_RELATION.search(answer):
        return None
    parts = [part for piece in _split_top_level(answer, "\\cup") for part in _split_top_level(piece, ",")]
    intervals = [_as_interval(part) for part in parts]
    return None if None in intervals else "\\cup".join(intervals)


# ---- Shape: ("matrix", rows) ("union", intervals) ("tuple", brackets, items) ("set", items) ("value", text)


def _split_top_level(text: str, separator: str) -> list[str]:
    """Split where `separator` is outside every bracket: '(1,2),3' -> ['(1,2)', '3']."""
    parts, depth, start = [], 0, 0
    for i, char in enumerate(text):
        depth += (char in "([{") - (char in ")]}")
        if depth == 0 and text.startswith(separator, i):
            parts.append(text[start:i])
            start = i + len(separator)
    return parts + [text[start:]]


def _normalize_items(items: list[str]) -> list[str]:
    """Normalize list items; 1\\pm\\sqrt{5} stands for two items, 1+\\sqrt{5} and 1-\\sqrt{5}."""
    expanded = []
    for item in items:
        pm = item.count("\\pm") == 1
        expanded += [item.replace("\\pm", "+"), item.replace("\\pm", "-")] if pm else [item]
    return [normalize_answer(item) for item in expanded]


def answer_shape(answer: str) -> tuple:
    if (label := _LABEL.match(answer)) and answer[label.end():][:1] in ("(", "[", "\\"):
        unlabelled = answer_shape(answer[label.end():])
        if unlabelled[0] != "value":  # BC = \begin{pmatrix}...\end{pmatrix}, P = (1, 2)
            return unlabelled
    matrix = re.fullmatch(r"\(?\\begin\{[pbvBV]?matrix\}(.*)\\end\{[pbvBV]?matrix\}\)?", answer)
    if matrix:
        rows = [row for row in matrix[1].split("\\\\") if row.strip()]
        return ("matrix", [_normalize_items(row.split("&")) for row in rows])
    if "\\cup" in answer:
        intervals = [answer_shape(part) for part in _split_top_level(answer, "\\cup")]
        if all(interval[0] == "tuple" for interval in intervals):
            return ("union", intervals)
    if answer.startswith("\\{") and answer.endswith("\\}"):  # a set: order never matters
        return ("set", _normalize_items(_split_top_level(answer[2:-2], ",")))
    closes_at_end = _matching_close(answer, 0, "([{", ")]}") == len(answer) - 1
    enclosed = answer[:1] in ("(", "[") and answer[-1:] in (")", "]") and closes_at_end
    if enclosed and len(inner := _split_top_level(answer[1:-1], ",")) > 1:
        return ("tuple", answer[0] + answer[-1], _normalize_items(inner))  # (a,b], [a,b): ends matter
    if len(items := _split_top_level(answer, ",")) > 1 or "\\pm" in answer:
        return ("set", _normalize_items(items))  # "1, -2", "1 \pm \sqrt{19}": several answers
    return ("value", answer)


def _same_unordered(pred: list, gold: list, same) -> bool:
    """Same multiset; greedy matching is enough because equivalence is transitive."""
    unused = list(pred)
    for item in gold:
        match = next((i for i, candidate in enumerate(unused) if same(candidate, item)), None)
        if match is None:
            return False
        unused.pop(match)
    return not unused


def same_shape(pred: tuple, gold: tuple, deadline: float) -> bool:
    def same_items(a: list, b: list) -> bool:
        return len(a) == len(b) and all(_same_value(x, y, deadline) for x, y in zip(a, b))

    for a, b in ((pred, gold), (gold, pred)):  # a vector may be written as a tuple: (1, 2, 3)
        if a[0] == "matrix" and b[0] == "tuple" and b[1] == "()" and min(len(a[1]), len(a[1][0])) == 1:
            return same_items(sum(a[1], []), b[2])
    for a, b in ((pred, gold), (gold, pred)):  # \frac{1}{2} or 0.5: two spellings of one value
        if a[0] == "set" and b[0] == "value" and len(set(a[1])) == len(a[1]) > 1:
            return all(_same_value(item, b[1], deadline) for item in a[1])
    if pred[0] != gold[0]:
        return False
    if gold[0] == "value":
        return _same_value(pred[1], gold[1], deadline)
    if gold[0] == "matrix":
        same_size = [len(row) for row in pred[1]] == [len(row) for row in gold[1]]
        return same_size and same_items(sum(pred[1], []), sum(gold[1], []))
    if gold[0] == "tuple":  # open and closed ends must match: [0,3) is not [0,3]
        return pred[1] == gold[1] and same_items(pred[2], gold[2])
    if gold[0] == "union":
        return _same_unordered(pred[1], gold[1], lambda a, b: same_shape(a, b, deadline))
    if all(item[:1] == "(" for item in pred[1] + gold[1]):  # solutions (x, y): the same set, a repeat is no new one
        same = lambda a, b: same_shape(answer_shape(a), answer_shape(b), deadline)  # noqa: E731
        return all(any(same(a, b) for b in gold[1]) for a in pred[1]) and \
            all(any(same(a, b) for a in pred[1]) for b in gold[1])
    return _same_unordered(pred[1], gold[1], lambda a, b: _same_value(a, b, deadline))


# ---- One value against another -----------------------------------------------------------------

# A label before an answer: x=, a_1=, f(x)=, AB=, |AB|=, V_1:V_2=, \frac{NO}{BO}=
_NAME = (r"(?:\|[A-Za-z]+\||[A-Za-z](?:[A-Za-z0-9']|_\{?\w+\}?)*|\\frac\{[A-Za-z]+\}\{[A-Za-z]+\}"
         r"|[a-zA-Z](?:\^\{?-1\}?)?\([A-Za-z0-9]+\)|m?\\angle ?[A-Z]{1,3})")
_LABEL = re.compile(rf"^{_NAME}(?::{_NAME})*=(?!=)")
_NUMBER_WORDS = {word: str(n) for n, word in enumerate("zero one two three four five six seven eight nine".split())}


def _is_words(value: str) -> bool:
    """Text answers (Evelyn, even) must not reach sympy: it reads Evelyn as E*v*e*l*y*n = Evelny."""
    plain = re.sub(r"\\[a-zA-Z]+", " ", value)  # \frac, \pi, ... are math, not words
    return any(word.lower() not in _MATH_WORDS for word in re.findall(r"[a-zA-Z]{3,}", plain))


def _base_number(value: str) -> tuple[str, str] | None:
    """52_8 -> ('52', '8'), A3_16 -> ('A3', '16'); None unless the digits fit the base (not R_2)."""
    match = re.fullmatch(r"([0-9A-Z]+)_(\d+)", value)
    try:
        return match.groups() if match and int(match[2]) >= 2 and int(match[1], int(match[2])) >= 0 else None
    except ValueError:
        return None


def _as_fraction(value: str) -> Fraction | None:
    """3, -0.25, .5, 7/2, \\frac{7}{2} as an exact Fraction; None for anything else."""
    frac = re.fullmatch(r"(-?)\\frac\{(-?\d+)\}\{(\d+)\}", value)
    text = f"{frac[1]}{frac[2]}/{frac[3]}" if frac else value
    if not re.fullmatch(r"[-+0-9./]{1,100}", text):  # Fraction also reads 59_8 and 1e999999999
        return None
    try:
        return Fraction(text)
    except (ValueError, ZeroDivisionError):
        return None


def _without_label(value: str) -> str:
    """AB=4 -> 4, |AB|=1 -> 1, V_1:V_2=11:21 -> 11:21; x=2+3=5 -> 5 (a chain ends in its value)."""
    if "\\approx" in value:  # x = 1/3 \approx 0.33 -> 1/3; x \approx 11 -> 11
        before, after = value.split("\\approx", 1)
        value = after if not before or _LABEL.fullmatch(before + "=") else before
    unlabelled = _LABEL.sub("", value, count=1)
    return unlabelled.rsplit("=", 1)[-1] if unlabelled != value else value


def _rounds_to(decimal: str, exact: Fraction, exact_text: str) -> bool:
    """0.0833 for 1/12: a decimal of 4 or more places that is the exact fraction rounded to those
    places. Only for a fraction with no finite decimal; 2.5 or 448/15625 must be matched exactly."""
    places = re.fullmatch(r"-?\d*\.(\d{4,})", decimal)
    denominator = exact.denominator
    for prime in (2, 5):
        while denominator % prime == 0:
            denominator //= prime
    if not places or "." in exact_text or denominator == 1:  # 448/15625 = 0.028672 exactly: no rounding
        return False
    scale = 10 ** len(places[1])
    return abs(Fraction(decimal) * scale - exact * scale) <= Fraction(1, 2)


def _same_value(pred: str, gold: str, deadline: float) -> bool:
    pred, gold = (re.sub(r"^\(([A-Za-z])\)$", r"\1", v) for v in (pred, gold))  # choice (B) is B
    pred, gold = (_NUMBER_WORDS.get(v.lower(), v) for v in (pred, gold))  # "four" is 4
    if pred == gold:
        return True
    words = _is_words(pred) or _is_words(gold)
    if pred.count("=") == gold.count("=") == 1 and not words:  # equations: the same up to a factor?
        pred_zero, gold_zero = ("({})-({})".format(*v.split("=")) for v in (pred, gold))
        if _sympy_says_equal(pred_zero, gold_zero, "equation", deadline):
            return True  # y - x = 1 is y = x + 1
    pred, gold = (_without_label(v) for v in (pred, gold))  # x = 5 answers 5
    if _is_words(pred) or _is_words(gold):
        return pred.lower() == gold.lower()
    if pred == gold or not pred or not gold or "=" in pred + gold:
        return pred == gold and bool(pred)
    pred_base, gold_base = _base_number(pred), _base_number(gold)
    if pred_base or gold_base:  # 52_8: the same digits; writing the base is optional
        bases_agree = not (pred_base and gold_base) or pred_base[1] == gold_base[1]
        return (pred_base or (pred,))[0] == (gold_base or (gold,))[0] and bases_agree
    pred_number, gold_number = _as_fraction(pred), _as_fraction(gold)
    if pred_number is not None and gold_number is not None:
        return pred_number == gold_number or _rounds_to(pred, gold_number, gold) or _rounds_to(gold, pred_number, pred)
    return _sympy_says_equal(pred, gold, "value", deadline)


def decimal_comma(comma: str, point: str) -> bool:
    """1000,99 for 1000.99 and 0,111 for 0.111: a decimal comma, when the other answer is a decimal.
    Not 1,220 (a thousands separator in English, so 1220) and not `1, 22` (with a space, two answers)."""
    match = re.fullmatch(r"\s*(-?\d+),(\d+)\s*", comma)
    if not match or not re.fullmatch(r"\s*-?\d*\.\d+\s*", point):
        return False
    whole, decimals = match.groups()
    if len(decimals) == 3 and 0 < len(whole.lstrip("-")) <= 3 and whole.lstrip("-") != "0":
        return False  # 1,220 reads as one thousand two hundred and twenty
    return Fraction(f"{whole}.{decimals}") == Fraction(point.strip())
