"""Math with tools: call a calculator or run python, then give the result as <answer>…</answer>.

The model calls a tool by writing ``<tool name="calculator">12*(3+4)</tool>`` or
``<tool name="python">print(2**10)</tool>`` (see :class:`~rewardlab.rubrics.parsers.ToolCallParser`); the
environment runs each call and replies with one ``tool`` message per call holding the result or the
error. The episode ends when the model writes an ``<answer>`` (tool calls in that same message are not
run) or after ``max_turns`` turns.

The tools are built so that what a model writes cannot hurt the machine it trains on:

* the **calculator** parses the expression with :mod:`ast` and evaluates only numbers, parentheses and
  ``+ - * / // % **`` itself, exactly (integers and fractions); a name, a call or an attribute is refused
  before anything runs, and powers whose result would be huge are refused too;
* the **python** tool runs the code through :mod:`rewardlab.sandbox`: a separate ``python -I`` process
  with no stdin, a wall-clock timeout and limits on memory, CPU time, file size and (sandboxed) processes,
  inside bubblewrap where it is installed (no network, no home directory or working tree, a private
  ``/tmp``); its output goes to files (so a print loop cannot fill this process's memory) and is truncated.

Problems need a tool to be answered reliably: big products and powers (levels 1-2, calculator), sums of
series and sequences (level 3, python) and small programs such as counting primes (level 4, python).
Answers are integers. Rewards: ``correct`` (primary), a small ``used_tool`` bonus and two weight-0
measurements, ``tool_calls`` and ``failed_tool_calls``.
"""

from __future__ import annotations

import ast
import math
import operator
import random
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from typing import Any

from rewardlab import sandbox
from rewardlab.envs.base import MultiTurnEnv
from rewardlab.envs.builtin.splits import (
    ADVERSARIAL_SEED_OFFSET,
    Procedural,
    check_split_sizes,
    checked_levels,
    split_draws,
)
from rewardlab.envs.dataset import load_examples
from rewardlab.rubrics.parsers import ToolCallParser
from rewardlab.rubrics.rubric import Rubric
from rewardlab.types import Example, Messages

TOOLS = ("calculator", "python")
MAX_CALLS_PER_TURN = 3
MAX_EXPRESSION_CHARS = 500
MAX_POWER_BITS = 20_000  # a power with a longer result is refused before it is computed
MAX_OUTPUT_CHARS = 1_500
SYSTEM_PROMPT = (
    "Solve the math problem. You have two tools. Call one by writing "
    '<tool name="calculator">EXPRESSION</tool> (numbers, parentheses and + - * / // % ** only) or '
    '<tool name="python">CODE</tool> (a python program; print what you want to see). Each call is answered '
    "with its result. When you know the result, reply with the final integer inside <answer></answer>. "
    "You have at most {max_turns} turns."
)


# -- the calculator ----------------------------------------------------------------------------------------


class ToolError(Exception):
    """A tool call that could not be carried out; the message is what the model is shown."""


Number = Fraction | float
BINARY_OPERATORS: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
}
UNARY_OPERATORS: dict[type, Callable[[Any], Any]] = {ast.UAdd: operator.pos, ast.USub: operator.neg}
CALCULATOR_RULE = "the calculator takes only numbers, parentheses and + - * / // % **"


def _power(base: Number, exponent: Number) -> Number:
    if isinstance(exponent, Fraction) and exponent.denominator == 1 and isinstance(base, Fraction):
        size = max(abs(base.numerator), base.denominator).bit_length()
        if abs(exponent.numerator) * size > MAX_POWER_BITS:
            raise ToolError("the result of that power is too large for the calculator (use python)")
        if base == 0 and exponent < 0:
            raise ToolError("division by zero")
        return base**exponent.numerator
    if abs(float(exponent)) > 10_000:
        raise ToolError("exponent too large")
    result = float(base) ** float(exponent)
    if isinstance(result, complex):
        raise ToolError("the result is not a real number")
    return result


def _evaluate(node: ast.AST) -> Number:
    if isinstance(node, ast.Expression):
        return _evaluate(node.body)
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        # Decimal literals become exact fractions (0.1 is 1/10, not 0.1000000000000000055...).
        return Fraction(str(node.value)) if isinstance(node.value, float) else Fraction(node.value)
    if isinstance(node, ast.UnaryOp) and type(node.op) in UNARY_OPERATORS:
        return UNARY_OPERATORS[type(node.op)](_evaluate(node.operand))
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow):
        return _power(_evaluate(node.left), _evaluate(node.right))
    if isinstance(node, ast.BinOp) and type(node.op) in BINARY_OPERATORS:
        left, right = _evaluate(node.left), _evaluate(node.right)
        if type(node.op) in (ast.Div, ast.FloorDiv, ast.Mod) and right == 0:
            raise ToolError("division by zero")
        result = BINARY_OPERATORS[type(node.op)](left, right)
        return Fraction(result) if isinstance(result, int) else result
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitXor):
        raise ToolError("^ is not a power here: write ** (2**10)")
    if isinstance(node, ast.Tuple):
        raise ToolError("write numbers without thousands separators (1234567, not 1,234,567)")
    raise ToolError(f"{CALCULATOR_RULE}; found {type(node).__name__}")


def format_number(value: Number) -> str:
    """Integers exactly; other fractions as a decimal to 15 significant digits."""
    if isinstance(value, Fraction) and value.denominator == 1:
        try:
            return str(value.numerator)
        except ValueError:  # the interpreter's limit on digits in a str(int)
            raise ToolError("the result has too many digits to show") from None
    number = float(value)
    if not math.isfinite(number):
        raise ToolError("the result is not a finite number")
    return format(number, ".15g")


def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression without ``eval``: parse it, then walk the allowed nodes."""
    text = expression.strip().replace("×", "*").replace("÷", "/").replace("−", "-")
    if not text:
        raise ToolError("empty expression")
    if len(text) > MAX_EXPRESSION_CHARS:
        raise ToolError(f"expression longer than {MAX_EXPRESSION_CHARS} characters")
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        raise ToolError(f"could not parse '{text[:60]}' ({CALCULATOR_RULE})") from None
    try:
        return format_number(_evaluate(tree))
    except RecursionError:
        raise ToolError("expression nested too deeply") from None
    except (OverflowError, ZeroDivisionError) as error:
        raise ToolError(str(error)) from None


# -- the python tool ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PythonLimits(sandbox.Limits):
    """The sandbox's limits, and how much of the output the model is shown."""

    max_output_chars: int = MAX_OUTPUT_CHARS


def _truncate(text: str, limit: int, keep: str = "head") -> str:
    if len(text) <= limit:
        return text
    cut = len(text) - limit
    if keep == "tail":  # a traceback's last lines say what went wrong
        return f"[... {cut} characters cut]\n" + text[-limit:]
    return text[:limit] + f"\n[... {cut} characters cut]"


def run_python(code: str, limits: PythonLimits | None = None) -> str:
    """Run ``code`` in the sandbox (:mod:`rewardlab.sandbox`); its (truncated) stdout, or a ``ToolError``."""
    limits = limits or PythonLimits()
    result = sandbox.run_python(code, limits)
    if result.error is not None:
        detail = _truncate(result.stderr.strip(), limits.max_output_chars, keep="tail")
        raise ToolError(f"{result.error}\n{detail}".strip())
    output = _truncate(result.stdout, limits.max_output_chars)
    return output if output.strip() else "(no output: print the values you want to see)"


# -- problems ----------------------------------------------------------------------------------------------


@dataclass
class Problem:
    question: str
    answer: int
    tool: str  # the tool that answers it, and how: what the oracle calls
    arguments: str
    kind: str


def _digits(rng: random.Random, n: int) -> int:
    return rng.randint(10 ** (n - 1), 10**n - 1)


def _primes_below(n: int) -> int:
    sieve = bytearray([1]) * n
    sieve[0] = sieve[1] = 0
    for i in range(2, math.isqrt(n - 1) + 1):
        if sieve[i]:
            sieve[i * i :: i] = bytearray(len(range(i * i, n, i)))
    return sum(sieve)


def _fibonacci(n: int) -> int:
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a


def _level1(rng: random.Random) -> Problem:
    kind = rng.choice(["product", "sum", "crates"])
    if kind == "product":
        a, b = _digits(rng, 4), _digits(rng, 4)
        return Problem(f"What is {a} * {b}?", a * b, "calculator", f"{a}*{b}", kind)
    if kind == "sum":
        a, b, c, d = (_digits(rng, 6) for _ in range(4))
        return Problem(
            f"What is {a} + {b} + {c} - {d}?", a + b + c - d, "calculator", f"{a}+{b}+{c}-{d}", kind
        )
    a, b, c = _digits(rng, 4), _digits(rng, 3), _digits(rng, 5)
    question = (
        f"A warehouse holds {a} crates of {b} items each. {c} items are shipped. How many items remain?"
    )
    return Problem(question, a * b - c, "calculator", f"{a}*{b}-{c}", kind)


def _level2(rng: random.Random) -> Problem:
    kind = rng.choice(["big_product", "power", "power_mod", "compound"])
    if kind == "big_product":
        a, b = _digits(rng, 7), _digits(rng, 6)
        return Problem(f"What is {a} * {b}?", a * b, "calculator", f"{a}*{b}", kind)
    if kind == "power":
        base, exponent = rng.randint(13, 97), rng.randint(7, 12)
        return Problem(
            f"What is {base} to the power {exponent}?",
            base**exponent,
            "calculator",
            f"{base}**{exponent}",
            kind,
        )
    if kind == "power_mod":
        base, exponent, modulus = rng.randint(3, 97), rng.randint(20, 60), rng.choice([997, 1000, 1009, 9973])
        question = f"What is the remainder when {base}^{exponent} is divided by {modulus}?"
        return Problem(
            question, pow(base, exponent, modulus), "calculator", f"{base}**{exponent} % {modulus}", kind
        )
    principal, rate, years = rng.randint(10, 500) * 100, rng.randint(2, 9), rng.randint(5, 20)
    question = (
        f"${principal} is invested at {rate}% per year, compounded yearly. What is it worth after "
        f"{years} years, rounded down to a whole dollar?"
    )
    answer = principal * (100 + rate) ** years // 100**years
    return Problem(question, answer, "calculator", f"{principal}*{100 + rate}**{years} // 100**{years}", kind)


def _level3(rng: random.Random) -> Problem:
    kind = rng.choice(["squares", "multiples", "cubes", "fibonacci"])
    if kind == "squares":
        n = rng.randint(100, 999)
        code = f"print(sum(i * i for i in range(1, {n + 1})))"
        return Problem(
            f"What is the sum of the squares of the integers from 1 to {n}?",
            n * (n + 1) * (2 * n + 1) // 6,
            "python",
            code,
            kind,
        )
    if kind == "multiples":
        j, k = rng.sample([3, 4, 5, 6, 7, 9, 11, 13], 2)
        n = rng.randint(1000, 99999)
        answer = sum(i for i in range(n) if i % j == 0 or i % k == 0)
        code = f"print(sum(i for i in range({n}) if i % {j} == 0 or i % {k} == 0))"
        return Problem(
            f"What is the sum of all positive integers below {n} that are multiples of {j} or {k}?",
            answer,
            "python",
            code,
            kind,
        )
    if kind == "cubes":
        a = rng.randint(10, 99)
        b = a + rng.randint(20, 200)
        answer = sum(i**3 for i in range(a, b + 1))
        code = f"print(sum(i ** 3 for i in range({a}, {b + 1})))"
        return Problem(
            f"What is the sum of the cubes of the integers from {a} to {b}?", answer, "python", code, kind
        )
    n = rng.randint(40, 120)
    code = f"a, b = 0, 1\nfor _ in range({n}):\n    a, b = b, a + b\nprint(a)"
    return Problem(
        f"What is the {n}th Fibonacci number, counting F(1) = F(2) = 1?", _fibonacci(n), "python", code, kind
    )


def _level4(rng: random.Random) -> Problem:
    kind = rng.choice(["primes", "digit_sum", "digit_sum_count", "choose"])
    if kind == "primes":
        n = rng.randint(1000, 30000)
        code = (
            f"n = {n}\nis_prime = [True] * n\nis_prime[0] = is_prime[1] = False\n"
            "for i in range(2, int(n ** 0.5) + 1):\n    if is_prime[i]:\n"
            "        is_prime[i * i :: i] = [False] * len(range(i * i, n, i))\nprint(sum(is_prime))"
        )
        return Problem(f"How many prime numbers are there below {n}?", _primes_below(n), "python", code, kind)
    if kind == "digit_sum":
        base, exponent = rng.randint(2, 99), rng.randint(50, 400)
        code = f"print(sum(int(d) for d in str({base} ** {exponent})))"
        answer = sum(int(d) for d in str(base**exponent))
        return Problem(f"What is the sum of the digits of {base}^{exponent}?", answer, "python", code, kind)
    if kind == "digit_sum_count":
        n, k = rng.randint(1000, 50000), rng.randint(3, 11)
        answer = sum(1 for i in range(1, n + 1) if sum(map(int, str(i))) % k == 0)
        code = f"print(sum(1 for i in range(1, {n + 1}) if sum(map(int, str(i))) % {k} == 0))"
        question = f"How many integers from 1 to {n} have a digit sum divisible by {k}?"
        return Problem(question, answer, "python", code, kind)
    n = rng.randint(30, 200)
    k = rng.randint(5, n // 2)
    code = f"import math\nprint(math.comb({n}, {k}))"
    question = f"In how many ways can {k} items be chosen from {n} distinct items (order does not matter)?"
    return Problem(question, math.comb(n, k), "python", code, kind)


LEVELS: dict[int, Callable[[random.Random], Problem]] = {1: _level1, 2: _level2, 3: _level3, 4: _level4}


def generate_problems(
    levels: list[int], count: int, split: str, seed: int, eval_fraction: float
) -> list[dict[str, Any]]:
    """``count`` distinct problems on ``split``'s side of a hash of the question, levels in turn."""
    rng = random.Random(f"tool_math:{split}:{seed}")

    def draw(level: int) -> tuple[str, Problem]:
        problem = LEVELS[level](rng)
        return problem.question, problem

    rows: list[dict[str, Any]] = []
    for level, problem in split_draws(count, levels, split, eval_fraction, draw, "problems"):
        info = {"level": level, "kind": problem.kind, "tool": problem.tool, "arguments": problem.arguments}
        rows.append({"prompt": problem.question, "answer": str(problem.answer), "info": info})
    return rows


# -- the environment ---------------------------------------------------------------------------------------


def _last_assistant(messages: Messages) -> str | None:
    return messages[-1]["content"] if messages and messages[-1]["role"] == "assistant" else None


class ToolMathEnv(Procedural, MultiTurnEnv):
    name = "tool_math"
    description = "Integer math with a calculator and a sandboxed python tool; levels 1-4."
    max_new_tokens_by_style = {"terse": 16, "chat": 96}

    generate_rows = staticmethod(generate_problems)

    def __init__(self, python_limits: PythonLimits, **kwargs: Any):
        super().__init__(**kwargs)
        self.python_limits = python_limits

    def initial_state(self, example: Example) -> dict[str, Any]:
        return {"tool_calls": 0, "failed_tool_calls": 0, "done": False}

    def is_completed(self, messages: Messages, state: dict[str, Any]) -> bool:
        text = _last_assistant(messages)
        if text is not None and self.parser.parse_answer(text) is not None:
            state["done"] = True  # an answer ends the episode; tool calls beside it are not run
        return bool(state["done"])

    def call_tool(self, name: str, arguments: str) -> str:
        if name == "calculator":
            return calculator(arguments)
        if name == "python":
            return run_python(_dedent_code(arguments), self.python_limits)
        raise ToolError(f"unknown tool '{name}' (tools: {', '.join(TOOLS)})")

    def env_response(self, messages: Messages, state: dict[str, Any]) -> Messages:
        calls = self.parser.parse_tool_calls(messages[-1]["content"])
        if not calls:
            return [
                {
                    "role": "user",
                    "content": 'No tool call and no answer found. Call a tool with <tool name="calculator">'
                    '...</tool> or <tool name="python">...</tool>, or answer with <answer>...</answer>.',
                }
            ]
        replies = []
        for i, call in enumerate(calls):
            state["tool_calls"] += 1
            try:
                if i >= MAX_CALLS_PER_TURN:
                    raise ToolError(f"skipped: at most {MAX_CALLS_PER_TURN} tool calls per turn")
                content = f"{call.name} result:\n{self.call_tool(call.name, call.arguments)}"
            except ToolError as error:
                state["failed_tool_calls"] += 1
                content = f"{call.name} error: {error}"
            replies.append({"role": "tool", "content": content})
        return replies

    def adversarial_examples(self, n: int, seed: int) -> list[Example]:
        """Held-out-side problems of levels 3 and 4 only: ones the calculator cannot answer, so a policy
        must write (working) python."""
        rows = generate_problems([3, 4], n, "eval", seed + ADVERSARIAL_SEED_OFFSET, self.eval_fraction)
        return load_examples(rows, self.system_prompt)

    def policies(self):
        """``oracle`` calls the tool the problem was generated with (it knows the right call from the
        example) and answers with the tool's output, so it also checks that the tools work. ``random``
        sometimes calls the calculator on random numbers and answers a random integer."""

        def oracle(messages, state, example, rng):
            last = messages[-1]
            if last["role"] != "tool":
                return self.parser.format_tool_call(example.info["tool"], example.info["arguments"])
            result = last["content"].split("\n", 1)[-1].strip()
            return self.parser.format_answer(result)

        def random_play(messages, state, example, rng):
            if messages[-1]["role"] != "tool" and rng.random() < 0.5:
                return self.parser.format_tool_call(
                    "calculator", f"{rng.randint(2, 999)}*{rng.randint(2, 999)}"
                )
            return self.parser.format_answer(str(rng.randint(0, 10**6)))

        return {"oracle": oracle, "random": random_play}


def _dedent_code(code: str) -> str:
    return textwrap.dedent(code).strip("\n") + "\n"


# -- rewards -----------------------------------------------------------------------------------------------


def _as_decimal(text: str) -> Decimal | None:
    cleaned = text.strip().replace(",", "").replace("_", "").replace(" ", "").removeprefix("$")
    try:
        value = Decimal(cleaned)
    except InvalidOperation:
        return None
    return value if value.is_finite() else None


def correct(completion: str, answer: str, parser: ToolCallParser) -> float:
    """1.0 when the final answer is the reference number exactly (``1,234`` and ``1234.0`` count)."""
    parsed = parser.parse_answer(completion)
    value = _as_decimal(parsed) if parsed is not None else None
    return 1.0 if value is not None and value == Decimal(answer) else 0.0


def used_tool(state: dict[str, Any]) -> float:
    """1.0 when at least one tool call succeeded. Kept small on purpose: if using a tool were worth as
    much as being right, a policy could learn to call python again and again instead of answering."""
    return 1.0 if state.get("tool_calls", 0) > state.get("failed_tool_calls", 0) else 0.0


def tool_calls(state: dict[str, Any]) -> float:
    return float(state.get("tool_calls", 0))


def failed_tool_calls(state: dict[str, Any]) -> float:
    return float(state.get("failed_tool_calls", 0))


def load_environment(
    level: int | list[int] = 1,
    num_train: int = 2000,
    num_eval: int = 200,
    seed: int = 0,
    eval_fraction: float = 0.1,
    max_turns: int = 6,
    tool_weight: float = 0.05,
    python_timeout: float = 3.0,
    python_memory_mb: int = 512,
    system_prompt: str | None = None,
    prompt_style: str = "terse",
) -> ToolMathEnv:
    """Tool-using math at ``level`` (an int or a list for a mix). Rubric: ``correct`` (1) + ``used_tool``
    (``tool_weight``, small by design); ``tool_calls`` and ``failed_tool_calls`` are weight-0 measurements."""
    levels = checked_levels(level, LEVELS)
    check_split_sizes(num_train, num_eval, eval_fraction)
    if max_turns < 1:
        raise ValueError(f"max_turns must be >= 1, got {max_turns}")
    if not 0.0 <= tool_weight < 1.0:
        raise ValueError(
            f"tool_weight must be in [0, 1) so that a right answer always outweighs it, got {tool_weight}"
        )
    if python_timeout <= 0 or python_memory_mb < 64:
        raise ValueError("python_timeout must be > 0 and python_memory_mb at least 64")
    parser = ToolCallParser()
    rubric = Rubric(
        [correct, used_tool, tool_calls, failed_tool_calls],
        weights=[1.0, tool_weight, 0.0, 0.0],
        parser=parser,
    )
    return ToolMathEnv(
        levels=levels,
        eval_fraction=eval_fraction,
        python_limits=PythonLimits(timeout_s=python_timeout, memory_mb=python_memory_mb),
        dataset=generate_problems(levels, num_train, "train", seed, eval_fraction),
        eval_dataset=generate_problems(levels, num_eval, "eval", seed, eval_fraction),
        system_prompt=system_prompt or SYSTEM_PROMPT.format(max_turns=max_turns),
        rubric=rubric,
        parser=parser,
        max_turns=max_turns,
        prompt_style=prompt_style,
    )
