"""Answer forms the checker once missed, each next to near misses that must still score 0 (a wrong
sign, an open instead of a closed end, a missing element). Every equivalence rule of reward.is_equiv
(support/math_answers.py) has its positive cases here and the negatives that bound it."""

import pytest

from reward import extract_answer, is_equiv, math_reward

# ---- a response that goes on after its final answer ---------------------------------------------

@pytest.mark.parametrize("response, answer", [
    ("Final Answer: The final answer is $5$.<|im_end|>\n<|im_start|>user\nThere might be an error", "5"),
    ("Final Answer: The final answer is $\\frac{1}{2}$. Let me double-check: $\\frac{2}{4}$ is it.", "\\frac{1}{2}"),
    ("Final Answer: The final answer is 7. Human: now another one", "7"),
    ("The final answer is 7</s>Problem: find $y$", "7"),
    ("Final Answer: The final answer is $\\$18.90$. <|eot_id|><|start_header_id|>user", "\\$18.90"),
    ("Final Answer: The final answer is 3.5", "3.5"),  # a decimal point is not a full stop
    ("Final Answer: The final answer is $(1, 2)$. I hope it is correct.\n\nUser: thanks", "(1, 2)"),
    ("**Final Answer:** 5", "5"), ("Final answer: $\\frac{1}{2}$.", "\\frac{1}{2}"),  # the phrase without "is"
    ("The final answer is: -5", "-5"), ("the final answer is **5**.", "5"),  # a colon, markdown bold
    ("Final Answer: 5. Final Answer: The final answer is $6$.", "6"),  # the last phrase wins
    ("The final answer is 5, because 2 + 3 = 5.", "5"), ("The final answer is 5 since it is odd", "5"),  # a reason
    ("The final answer is \\[\\frac{1}{2}\\]", "\\frac{1}{2}"), ("The final answer is:\n\\[\n-3\n\\]\nI hope", "-3"),  # display
])
def test_the_answer_ends_where_the_response_runs_on(response, answer):
    assert extract_answer(response) == answer


def test_the_phrase_without_is_still_needs_the_right_answer():
    assert math_reward("**Final Answer:** $-5$", "-5") == 1.0
    assert math_reward("**Final Answer:** $-5$", "5") == 0.0
    assert math_reward("Final answer: $(1, 2]$", "(1, 2)") == 0.0
    assert math_reward("Before the final answer: check $5$. So it is 6.", "5") == 0.0
    assert math_reward("The final answer is -5, because 2 + 3 = 5.", "5") == 0.0
    assert math_reward("The final answer is \\[-3\\]", "3") == 0.0


def test_a_run_on_response_still_needs_the_right_answer():
    run_on = "Final Answer: The final answer is ${}$.<|im_end|>\n<|im_start|>user\nThe answer is 6."
    assert math_reward(run_on.format("5"), "5") == 1.0
    assert math_reward(run_on.format("-5"), "5") == 0.0
    assert math_reward(run_on.format("6"), "5") == 0.0  # the 6 after the turn ends is not the answer


# ---- how other model families announce the answer (issue 18) ------------------------------------

@pytest.mark.parametrize("response, answer", [
    ("So she makes 9 * 2 = 18 dollars.\nThe answer is: 18", "18"),  # MetaMath, WizardMath
    ("The answer is: \\frac{1}{2}.</s>", "\\frac{1}{2}"), ("the answer is:\n\\[\n-3\n\\]", "-3"),
    ("We are done.\n\n# Answer\n\n\\frac{14}{3}\n", "\\frac{14}{3}"),  # PRM800K's GPT-4 solutions
    ("## Final Answer\n\n12", "12"), ("### Final Answer\nThe final answer is $6$.", "6"),
    ("She makes 9 * 2 = $<<9*2=18>>18 every day.\n#### 18", "18"), ("#### $1,200", "1,200"),  # GSM8K
    ("Final Answer: The volume of the cube is 216 cubic inches.", "216"),  # a sentence: the value it states
    ("Final Answer: The side length of the square is $\\sqrt{2}$ units.", "\\sqrt{2}"),
    ("Final Answer: The total cost is \\$18.90.", "18.90"), ("The answer is: The smallest value is 12", "12"),
    ("# Answer\n\nThe number of ways to seat them is 720", "720"),
    ("Final Answer: x = 2 or x = 3", "x = 2 or x = 3"),  # not prose: read as before
    ("The answer is: 7. Final Answer: The final answer is $8$.", "8"),  # the last marker wins
    ("The answer is: 7, so $\\boxed{8}$", "8"), ("$\\boxed{8}$.\nThe answer is: 7", "7"),  # as with the phrase
])
def test_other_families_announce_the_answer(response, answer):
    assert extract_answer(response) == answer


@pytest.mark.parametrize("response", [
    "The answer is 5.",  # no colon: prose, as it always was
    "#### 1. Read the problem\nWe need x, and x is 5.",  # a markdown heading, not GSM8K's `#### N`
    "#### 5. Check the answer\nIt works.",
    "Final Answer: The cube has 6 faces and volume 216 cubic inches.",  # two numbers: which one?
    "Final Answer: It takes 2 hours and 30 minutes.", "Final Answer: The 5th term is 20.",
])
def test_no_number_is_picked_from_an_unclear_answer(response):
    answer = extract_answer(response)
    assert answer is None or not any(is_equiv(answer, gold) for gold in ("5", "6", "216", "2", "30", "20"))


@pytest.mark.parametrize("response, right, wrong", [
    ("Step.\nThe answer is: 18", "18", "-18"), ("Step.\n\n# Answer\n\n42", "42", "41"),
    ("Step.\n#### 42", "42", "41"), ("Step.\n#### 1,200", "1200", "120"),
    ("Final Answer: The volume of the cube is 216 cubic inches.", "216", "217"),
    ("Final Answer: The volume of the cube is 217 cubic inches.", "217", "216"),
    ("Final Answer: The probability of drawing a red ball is 3/8", "\\frac{3}{8}", "\\frac{8}{3}"),
    ("Final Answer: The sum of the roots is $-3$.", "-3", "3"),
])
def test_each_announcement_still_needs_the_right_answer(response, right, wrong):
    assert math_reward(response, right) == 1.0
    assert math_reward(response, wrong) == 0.0


@pytest.mark.parametrize("response", [
    "Final Answer: The volume of the cube is not 216 cubic inches.",  # a negation
    "Final Answer: The answer is 216 more than x.", "Final Answer: The length is 216 times the width.",  # an operand
    "Final Answer: The answer is the square of 216.",  # not what the verb states
    "Final Answer: 6 cubes have a volume of 216 cubic inches.",  # two numbers
])
def test_a_number_in_a_sentence_is_paid_only_when_stated(response):
    assert math_reward(response, "216") == 0.0


@pytest.mark.parametrize("response", ["So the false statement is \\boxed{(D) $4(x+1)=4x$}.",
                                      "So the false statement is $\\boxed{\\text{(D) } 4(x+1)=4x}$."])
def test_a_boxed_choice_with_its_option_text(response):
    assert math_reward(response, "\\text{(D)}") == 1.0 and math_reward(response, "D") == 1.0
    assert math_reward(response, "\\text{(C)}") == 0.0 and math_reward(response, "4") == 0.0


# ---- several boxes that together form the answer --------------------------------------------------

@pytest.mark.parametrize("response, answer", [
    ("The roots are $\\boxed{1}, \\boxed{2}$.", "1, 2"),
    ("so $\\boxed{-2} \\quad \\text{and} \\quad \\boxed{1}$", "-2, 1"),
    ("Thus $k = \\boxed{45}$ and $n = \\boxed{2}$.", "45, 2"),
    ("\\( \\boxed{3} \\) and \\( \\boxed{-3} \\)", "3, -3"),
    ("$d = \\boxed{15\\frac{39}{40}}$, or $\\boxed{\\frac{639}{40}}$ inches.", "\\frac{639}{40}"),  # MATH500's own
    ("First $\\boxed{1}$, then $\\boxed{\\{1, 2\\}}$.", "\\{1, 2\\}"),  # a word between: a step, then the answer
    ("we get $\\boxed{4}$ for part (a) and $\\boxed{5}$", "5"),
])
def test_glued_boxes_form_one_answer(response, answer):
    assert extract_answer(response) == answer


@pytest.mark.parametrize("response, gold, reward", [
    ("$\\boxed{1}$ and $\\boxed{-2}$", "1, -2", 1.0),
    ("$\\boxed{1}$ and $\\boxed{-2}$", "\\(\\boxed{-2}\\) and \\(\\boxed{1}\\).", 1.0),  # gold written as a solution
    ("$\\boxed{-2, 1}$", "$\\boxed{1}\\boxed{-2}$", 1.0),
    ("$\\boxed{1}$ and $\\boxed{2}$", "1, -2", 0.0),  # a wrong sign
    ("so $\\boxed{1}$.", "1, -2", 0.0),  # a missing element
    ("$\\boxed{1}, \\boxed{-2}, \\boxed{3}$", "1, -2", 0.0),  # one too many
    # MATH's reference solutions box both roots where the gold is the last one: the last box counts
    ("the values $a = \\boxed{-1}$ and $a = \\boxed{2}.$", "2", 1.0),
    ("the values $a = \\boxed{-1}$ and $a = \\boxed{2}.$", "-1", 0.0),
    ("the values $a = \\boxed{-1}$ and $a = \\boxed{2}.$", "-2", 0.0),
])
def test_several_boxes_against_gold(response, gold, reward):
    assert math_reward(response, gold) == reward


# ---- is_equiv: each form, both ways round -----------------------------------------------------------

FORMS = {
    "labelled answers": [
        ("AB=4, CD=5", "4, 5", True), ("k = 45, n = 2", "45, 2", True), ("V_1:V_2=11:21", "11:21", True),
        ("|AB|=1", "1", True), ("A:B=1", "1", True), ("\\frac{NO}{BO}=\\frac{1}{\\sqrt{6}}", "\\frac{1}{\\sqrt{6}}", True),
        ("x_{1}=2,\\quad x_{2}=3", "2, 3", True), ("BC = \\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", "\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", True),
        ("x = 2 + 3 = 5", "5", True),
        ("p=5,q=2;p=7,q=2", "(5,2),(7,2)", True),
        ("p=5,q=2;p=7,q=2", "(2,5),(7,2)", False), ("p=5,q=2;p=7,q=3", "(5,2),(7,2)", False),
        ("AB=4, CD=6", "4, 5", False), ("|AB|=-1", "1", False), ("V_1:V_2=21:11", "11:21", False),
        ("x+y=5", "5", False), ("2x=6", "6", False), ("x = 5 = 2 + 4", "5", False),
    ],
    "sets and separators": [
        ("\\{-12, -11, -6\\}", "-12, -11, -6", True), ("-12; -11; -6", "\\{-12,-11,-6\\}", True),
        ("x = 2 \\text{ or } x = 3", "2, 3", True), ("(11,7)or(7,11)", "(7,11),\\ (11,7)", True),
        ("(0;0;1),(0;-2;1)", "(0, -2, 1), (0, 0, 1)", True), ("(1, 2), (2, 1), (1, 2)", "(2,1),(1,2)", True),
        ("32,349", "32349", True),
        ("\\{-12, -11\\}", "-12, -11, -6", False), ("\\{-12, -11, 6\\}", "-12, -11, -6", False),
        ("2; -3", "2, 3", False), ("32, 349", "32349", False), ("(1, 2), (2, 1)", "(1,2)", False),
        ("1, 1, 2", "1, 2", False),  # a repeated root is not a repeated solution pair
    ],
    "inequalities and intervals": [
        ("x \\le 5", "5 \\ge x", True), ("-2 \\le x \\le 7", "x \\in [-2, 7]", True), ("0 < f(x) < 1", "(0, 1)", True),
        ("x < -2 \\text{ or } x > 3", "(-\\infty,-2)\\cup(3,\\infty)", True), ("x \\geq 5", "[5, \\infty)", True),
        ("7 \\geq x > -2", "(-2, 7]", True), ("x<=1", "(-\\infty, 1]", True), ("-x > -1", "x < 1", True),
        ("-x \\ge \\frac{1}{2}", "x \\le -\\frac12", True), ("-x > -1", "x > 1", False), ("-x \\ge -1", "x < 1", False),
        ("x < 5", "(-\\infty, 5]", False), ("-2 < x \\le 7", "[-2, 7]", False), ("x > 5", "(-\\infty, 5)", False),
        ("x \\le -5", "x \\le 5", False), ("x < -2 \\text{ or } x > 3", "(-\\infty,-2)\\cup[3,\\infty)", False),
        ("x < -2", "(-\\infty,-2)\\cup(3,\\infty)", False),
    ],
    "inequalities in |x|": [
        ("1\\leq|z|\\leq \\frac{3}{2}", "z \\in [-\\frac{3}{2}, -1] \\cup [1, \\frac{3}{2}]", True), ("|x|<5", "(-5,5)", True),
        ("|x| > 2", "(-\\infty,-2)\\cup(2,\\infty)", True), ("|x|\\ge 2", "x \\le -2 \\text{ or } x \\ge 2", True),
        ("1<|z|\\leq 2", "[-2,-1)\\cup(1,2]", True),
        ("|x|<5", "[-5,5]", False), ("|x|<5", "(0,5)", False), ("|x| > 2", "(-\\infty,-2]\\cup(2,\\infty)", False),
        ("|x| > 2", "(2,\\infty)", False), ("1<|z|\\leq 2", "[-2,-1]\\cup[1,2]", False), ("|x|<-5", "(5,-5)", False),
    ],
    "identities and commuting factors": [
        ("\\sec^2 y", "\\tan^2 y + 1", True), ("\\sec^2(y)", "\\tan^2(y)+1", True), ("\\sin^2 x + \\cos^2 x", "1", True),
        ("x\\sqrt{2} + 1", "1 + \\sqrt{2}x", True), ("2ab + 3", "3 + 2ba", True),
        ("\\sec^2 y", "\\tan^2 y - 1", False), ("\\sec^2 y", "\\tan^2 y", False), ("x\\sqrt{2} - 1", "1 + \\sqrt{2}x", False),
        ("\\sin^2 x", "\\sin x^2", False),
    ],
    "long decimals": [
        ("0.0833333333333333", "\\frac{1}{12}", True), ("0.3333", "\\frac{1}{3}", True), ("-0.6667", "-\\frac23", True),
        ("(0.6, 2.6667]", "(\\frac{3}{5}, \\frac{8}{3}]", True),
        ("0.333", "\\frac{1}{3}", False), ("0.3334", "\\frac{1}{3}", False), ("-0.3333", "\\frac{1}{3}", False),
        ("4.67", "\\frac{14}{3}", False), ("0.6666", "\\frac{2}{3}", False), ("2.6667", "2.66666", False),
        ("(0.6, 2.6667)", "(\\frac{3}{5}, \\frac{8}{3}]", False),
    ],
    "units with a slash": [
        ("50\\text{ km/h}", "50", True), ("9.8\\,\\text{m/s}^2", "9.8", True), ("50 \\text{km}/\\text{h}", "50", True),
        ("2 x/y", "2", False),  # bare letters with a slash are a value, not a unit
        ("50\\text{ km/h}", "5", False), ("9.8\\,\\text{m/s}^2", "98", False), ("50 \\text{km}/\\text{h}", "-50", False),
    ],
    "angle, inverse and value-of labels": [
        ("\\angle A = 30^\\circ", "30", True), ("m\\angle ABC = 30^\\circ", "30", True),
        ("f^{-1}(x)=\\frac{x-3}{2}", "\\frac{x-3}{2}", True), ("P(A) = \\frac{1}{2}", "\\frac12", True), ("f(2)=5", "5", True),
        ("\\angle A = 30^\\circ", "60", False), ("m\\angle ABC = 30^\\circ", "-30", False),
        ("f^{-1}(x)=\\frac{x-3}{2}", "\\frac{x+3}{2}", False), ("P(A) = \\frac{1}{2}", "\\frac13", False), ("f(2)=5", "2", False),
    ],
    "one-element set": [
        ("\\{3\\}", "3", True), ("\\{-\\frac12\\}", "-0.5", True),
        ("\\{3\\}", "-3", False), ("\\{3\\}", "\\{3, 4\\}", False), ("\\{3, 4\\}", "3", False),
    ],
    "one-character denominator after a nested numerator": [
        ("\\frac{\\sqrt{3}}2", "\\frac{\\sqrt{3}}{2}", True), ("\\frac{\\sqrt{2}}2", "\\frac{1}{\\sqrt{2}}", True),
        ("\\frac{1+\\sqrt{5}}4", "\\frac{1+\\sqrt{5}}{4}", True),
        ("\\frac{\\sqrt{3}}2", "\\frac{\\sqrt{3}}{3}", False), ("\\frac{\\sqrt{3}}2", "\\frac{\\sqrt{3}}{20}", False),
    ],
    "two spellings of one value": [
        ("\\frac{1}{2} \\text{ or } 0.5", "0.5", True), ("x=\\frac12 \\text{ or } x=0.5", "\\frac{1}{2}", True),
        ("\\frac{1}{2} \\text{ or } 0.6", "0.5", False), ("1, -1", "1", False), ("2, 3", "2", False),
    ],
    "units on list items": [
        ("3 \\text{ cm}, 4 \\text{ cm}", "3, 4", True), ("(3\\text{ cm}, 4)", "(3, 4)", True), ("\\text{A}, \\text{C}", "A, C", True),
        ("3 \\text{ cm}, 4 \\text{ cm}", "3, 5", False), ("\\text{A}, \\text{C}", "A", False), ("2, \\text{even}", "2", False),
    ],
    "decimal comma": [
        ("1000,99", "1000.99", True), ("1,22", "1.22", True), ("0,111", "0.111", True), ("-3,25", "-3.25", True),
        ("1,220", "1.22", False), ("1, 22", "1.22", False), ("1000,99", "1000.9", False), ("1,22", "-1.22", False),
        ("0,111", "111", False), ("1,5", "15", False),
    ],
    "time of day": [  # am and pm are part of the answer, not a unit to drop
        ("5\\text{am}", "5am", True), ("9 AM", "9\\text{ a.m.}", True), ("\\text{4:30 p.m.}", "4\\!:\\!30 \\text{ p.m.}", True),
        ("5\\text{pm}", "5\\text{am}", False), ("9\\text{ a.m.}", "9\\text{ p.m.}", False), ("5am", "6am", False),
    ],
    "set-builder notation": [  # {x | x > 2} is the interval (2, oo), as x > 2 is
        ("\\{x \\mid x > 2\\}", "\\{x | x>2\\}", True), ("\\{x \\mid x > 2\\}", "(2,\\infty)", True),
        ("\\left\\{ x : x \\le -1 \\right\\}", "x \\le -1", True), ("\\{x \\mid x^2 = 4\\}", "\\{x | x^2=4\\}", True),
        ("\\{x \\mid x \\ge 2\\}", "(2,\\infty)", False), ("\\{x \\mid x > 2\\}", "(-\\infty,2)", False),
        ("\\{x \\mid y > 2\\}", "(2,\\infty)", False), ("\\{x \\mid x^2 = 4\\}", "\\{x | x^2=9\\}", False),
    ],
    "a choice with its option text": [  # \boxed{(D) $4(x+1)=4x$} answers (D)
        ("(D) $4(x+1)=4x$", "\\text{(D)}", True), ("\\text{(D) } 4(x+1)=4x", "D", True), ("(C) $(1, 2)$", "C", True),
        ("(C) $4(x+1)=4x$", "\\text{(D)}", False), ("(D) $4(x+1)=4x$", "C", False),
        ("(A), (D)", "D", False), ("(D) and (A)", "D", False), ("(D) 5, (A) 6", "D", False),
    ],
    "approximately": [
        ("x \\approx 11", "11", True), ("x = \\frac{1}{3} \\approx 0.33", "\\frac{1}{3}", True),
        ("x \\approx 12", "11", False), ("x = \\frac{1}{4} \\approx 0.33", "\\frac{1}{3}", False),
    ],
}


@pytest.mark.parametrize("pred, gold, expected", [case for cases in FORMS.values() for case in cases])
def test_answer_forms(pred, gold, expected):
    assert is_equiv(pred, gold) is expected
    assert is_equiv(gold, pred) is expected


def test_every_form_has_near_misses():
    for form, cases in FORMS.items():
        assert sum(expected for *_, expected in cases) >= 2, form
        assert sum(not expected for *_, expected in cases) >= 2, form
