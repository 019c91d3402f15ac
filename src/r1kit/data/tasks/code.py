"""A small built-in code task: 32 short Python function problems with hidden tests.

Each row asks for one function (`prompt`), carries a reference solution (`answer`, used for cold
start and as a sanity check) and hidden assert tests (`tests`, every one of the host-checked shape
`assert f(...) == LITERAL`, so no test can be passed without computing its value; see
`r1kit.sandbox`). The verifier is the `code` reward: the fraction of tests the completion's program
passes in the sandbox (or all-or-nothing).

The split is a property of the problem, not of the seed: the 8 problems whose names have the
lowest CRC-32 form the test split, the other 24 the training split, so rows of any seed's train
split never appear in any seed's test split. The seed orders (and, past one pass, repeats) the
training problems; the test split has each of its problems at most once.
"""

from __future__ import annotations

import random
import zlib
from dataclasses import dataclass
from typing import Any, Sequence

from r1kit.data.completion import Completion
from r1kit.data.tasks.code_reward import code_reward, extract_code
from r1kit.errors import R1kitError

TEST_PROBLEMS = 8


@dataclass(frozen=True)
class Problem:
    name: str
    """The function's name (the entry point)."""
    signature: str
    description: str
    example: str
    solution: str
    tests: tuple[str, ...]

    @property
    def prompt(self) -> str:
        return (
            f"Write a Python function `{self.signature}` that {self.description}. "
            f"For example, `{self.example}`. Give the complete function in a ```python code block."
        )


def _p(name: str, signature: str, description: str, example: str, solution: str, *tests: str) -> Problem:
    return Problem(name, signature, description, example, solution.strip() + "\n", tests)


PROBLEMS: tuple[Problem, ...] = (
    _p("add", "add(a, b)", "returns the sum of the numbers a and b", "add(2, 3) == 5",
       "def add(a, b):\n    return a + b",
       "assert add(4, 5) == 9", "assert add(-4, 4) == 0", "assert add(10, -3) == 7", "assert add(0, 0) == 0"),
    _p("reverse_string", "reverse_string(s)", "returns the string s reversed", "reverse_string('abc') == 'cba'",
       "def reverse_string(s):\n    return s[::-1]",
       "assert reverse_string('hello') == 'olleh'", "assert reverse_string('') == ''",
       "assert reverse_string('a') == 'a'", "assert reverse_string('ab c') == 'c ba'"),
    _p("fizzbuzz", "fizzbuzz(n)",
       "returns the list of strings for 1..n where multiples of 3 are 'Fizz', multiples of 5 are 'Buzz', "
       "multiples of both are 'FizzBuzz' and other numbers are their decimal digits",
       "fizzbuzz(3) == ['1', '2', 'Fizz']",
       "def fizzbuzz(n):\n    out = []\n    for i in range(1, n + 1):\n"
       "        out.append('FizzBuzz' if i % 15 == 0 else 'Fizz' if i % 3 == 0 else 'Buzz' if i % 5 == 0 else str(i))\n"
       "    return out",
       "assert fizzbuzz(5) == ['1', '2', 'Fizz', '4', 'Buzz']", "assert fizzbuzz(15)[-1] == 'FizzBuzz'",
       "assert fizzbuzz(0) == []", "assert fizzbuzz(10)[9] == 'Buzz'"),
    _p("gcd", "gcd(a, b)", "returns the greatest common divisor of the non-negative integers a and b (gcd(0, n) is n)",
       "gcd(8, 12) == 4",
       "def gcd(a, b):\n    while b:\n        a, b = b, a % b\n    return a",
       "assert gcd(12, 18) == 6", "assert gcd(7, 13) == 1", "assert gcd(0, 5) == 5", "assert gcd(100, 75) == 25"),
    _p("is_palindrome", "is_palindrome(s)",
       "returns True when s reads the same forwards and backwards, ignoring case and every character that "
       "is not a letter or a digit, else False",
       "is_palindrome('Racecar') == True",
       "def is_palindrome(s):\n    t = [c.lower() for c in s if c.isalnum()]\n    return t == t[::-1]",
       "assert is_palindrome('A man, a plan, a canal: Panama') == True", "assert is_palindrome('hello') == False",
       "assert is_palindrome('') == True", "assert is_palindrome('No lemon, no melon') == True"),
    _p("running_sum", "running_sum(nums)", "returns the list of running totals of the list nums",
       "running_sum([1, 1]) == [1, 2]",
       "def running_sum(nums):\n    out, total = [], 0\n    for x in nums:\n        total += x\n        out.append(total)\n"
       "    return out",
       "assert running_sum([1, 2, 3, 4]) == [1, 3, 6, 10]", "assert running_sum([]) == []",
       "assert running_sum([5]) == [5]", "assert running_sum([3, -1, 2]) == [3, 2, 4]"),
    _p("factorial", "factorial(n)", "returns n! for a non-negative integer n", "factorial(3) == 6",
       "def factorial(n):\n    out = 1\n    for i in range(2, n + 1):\n        out *= i\n    return out",
       "assert factorial(0) == 1", "assert factorial(5) == 120", "assert factorial(10) == 3628800",
       "assert factorial(1) == 1"),
    _p("fibonacci", "fibonacci(n)", "returns the n-th Fibonacci number, with fibonacci(0) == 0 and fibonacci(1) == 1",
       "fibonacci(6) == 8",
       "def fibonacci(n):\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a",
       "assert fibonacci(0) == 0", "assert fibonacci(1) == 1", "assert fibonacci(10) == 55",
       "assert fibonacci(30) == 832040"),
    _p("is_prime", "is_prime(n)", "returns True when the integer n is a prime number, else False", "is_prime(7) == True",
       "def is_prime(n):\n    if n < 2:\n        return False\n    i = 2\n    while i * i <= n:\n"
       "        if n % i == 0:\n            return False\n        i += 1\n    return True",
       "assert is_prime(2) == True", "assert is_prime(1) == False", "assert is_prime(97) == True",
       "assert is_prime(91) == False", "assert is_prime(0) == False"),
    _p("count_vowels", "count_vowels(s)", "returns how many of the characters of s are vowels (a, e, i, o, u, in either case)",
       "count_vowels('banana') == 3",
       "def count_vowels(s):\n    return sum(c in 'aeiouAEIOU' for c in s)",
       "assert count_vowels('hello') == 2", "assert count_vowels('AEIOU xyz') == 5", "assert count_vowels('') == 0",
       "assert count_vowels('rhythm') == 0"),
    _p("max_of_list", "max_of_list(nums)", "returns the largest number of the non-empty list nums",
       "max_of_list([1, 9, 2]) == 9",
       "def max_of_list(nums):\n    best = nums[0]\n    for x in nums[1:]:\n        if x > best:\n            best = x\n"
       "    return best",
       "assert max_of_list([3, 1, 4]) == 4", "assert max_of_list([-5, -2, -9]) == -2", "assert max_of_list([7]) == 7"),
    _p("flatten", "flatten(nested)", "returns the elements of the arbitrarily nested list nested, in order, as a flat list",
       "flatten([1, [2, 3]]) == [1, 2, 3]",
       "def flatten(nested):\n    out = []\n    for x in nested:\n"
       "        if isinstance(x, list):\n            out.extend(flatten(x))\n        else:\n            out.append(x)\n"
       "    return out",
       "assert flatten([1, [2, [3, [4]]]]) == [1, 2, 3, 4]", "assert flatten([]) == []",
       "assert flatten([[], [1], [[2]]]) == [1, 2]"),
    _p("word_count", "word_count(text)",
       "returns a dict mapping each lower-cased whitespace-separated word of text to the number of times it occurs",
       "word_count('to be or not to be') == {'to': 2, 'be': 2, 'or': 1, 'not': 1}",
       "def word_count(text):\n    out = {}\n    for w in text.lower().split():\n        out[w] = out.get(w, 0) + 1\n"
       "    return out",
       "assert word_count('a b a') == {'a': 2, 'b': 1}", "assert word_count('') == {}",
       "assert word_count('Hi hi HI') == {'hi': 3}"),
    _p("two_sum", "two_sum(nums, target)",
       "returns the tuple (i, j), i < j, of the indices of the only two elements of nums that add up to target",
       "two_sum([1, 2, 4], 6) == (1, 2)",
       "def two_sum(nums, target):\n    seen = {}\n    for j, x in enumerate(nums):\n"
       "        if target - x in seen:\n            return (seen[target - x], j)\n        seen[x] = j",
       "assert two_sum([2, 7, 11, 15], 9) == (0, 1)", "assert two_sum([3, 2, 4], 6) == (1, 2)",
       "assert two_sum([1, 5, 3, 8], 11) == (2, 3)"),
    _p("binary_search", "binary_search(xs, target)",
       "returns the index of target in the sorted list xs of distinct numbers, or -1 when it is absent",
       "binary_search([1, 2, 3], 3) == 2",
       "def binary_search(xs, target):\n    lo, hi = 0, len(xs) - 1\n    while lo <= hi:\n        mid = (lo + hi) // 2\n"
       "        if xs[mid] == target:\n            return mid\n        if xs[mid] < target:\n            lo = mid + 1\n"
       "        else:\n            hi = mid - 1\n    return -1",
       "assert binary_search([1, 3, 5, 7, 9], 7) == 3", "assert binary_search([1, 3, 5], 4) == -1",
       "assert binary_search([], 1) == -1", "assert binary_search([2, 4, 6, 8], 2) == 0"),
    _p("merge_sorted", "merge_sorted(a, b)", "returns the sorted list of the elements of the sorted lists a and b",
       "merge_sorted([1, 3], [2]) == [1, 2, 3]",
       "def merge_sorted(a, b):\n    out, i, j = [], 0, 0\n    while i < len(a) and j < len(b):\n"
       "        if a[i] <= b[j]:\n            out.append(a[i])\n            i += 1\n        else:\n"
       "            out.append(b[j])\n            j += 1\n    return out + a[i:] + b[j:]",
       "assert merge_sorted([1, 4, 9], [2, 3, 10]) == [1, 2, 3, 4, 9, 10]", "assert merge_sorted([], [1]) == [1]",
       "assert merge_sorted([1, 1], [1]) == [1, 1, 1]"),
    _p("remove_duplicates", "remove_duplicates(xs)",
       "returns the list xs without repeated elements, keeping the first occurrence of each in order",
       "remove_duplicates([1, 1, 2]) == [1, 2]",
       "def remove_duplicates(xs):\n    seen, out = set(), []\n    for x in xs:\n        if x not in seen:\n"
       "            seen.add(x)\n            out.append(x)\n    return out",
       "assert remove_duplicates([3, 1, 3, 2, 1]) == [3, 1, 2]", "assert remove_duplicates([]) == []",
       "assert remove_duplicates(['a', 'a']) == ['a']"),
    _p("capitalize_words", "capitalize_words(s)",
       "returns s with the first character of every space-separated word upper-cased and the rest unchanged",
       "capitalize_words('good day') == 'Good Day'",
       "def capitalize_words(s):\n    return ' '.join(w[:1].upper() + w[1:] for w in s.split(' '))",
       "assert capitalize_words('hello world') == 'Hello World'", "assert capitalize_words('python is fun') == 'Python Is Fun'",
       "assert capitalize_words('') == ''", "assert capitalize_words('a bC') == 'A BC'"),
    _p("sum_of_digits", "sum_of_digits(n)", "returns the sum of the decimal digits of the non-negative integer n",
       "sum_of_digits(42) == 6",
       "def sum_of_digits(n):\n    return sum(int(d) for d in str(n))",
       "assert sum_of_digits(0) == 0", "assert sum_of_digits(12345) == 15", "assert sum_of_digits(9) == 9",
       "assert sum_of_digits(1001) == 2"),
    _p("are_anagrams", "are_anagrams(a, b)",
       "returns True when the strings a and b are anagrams of each other, ignoring case and spaces, else False",
       "are_anagrams('Elvis', 'lives') == True",
       "def are_anagrams(a, b):\n    norm = lambda s: sorted(s.replace(' ', '').lower())\n    return norm(a) == norm(b)",
       "assert are_anagrams('listen', 'silent') == True", "assert are_anagrams('Dormitory', 'dirty room') == True",
       "assert are_anagrams('abc', 'abd') == False"),
    _p("celsius_to_fahrenheit", "celsius_to_fahrenheit(c)", "converts c degrees Celsius to degrees Fahrenheit (c * 9 / 5 + 32)",
       "celsius_to_fahrenheit(10) == 50.0",
       "def celsius_to_fahrenheit(c):\n    return c * 9 / 5 + 32",
       "assert celsius_to_fahrenheit(0) == 32.0", "assert celsius_to_fahrenheit(100) == 212.0",
       "assert celsius_to_fahrenheit(-40) == -40.0", "assert celsius_to_fahrenheit(25) == 77.0"),
    _p("count_chars", "count_chars(s)", "returns a dict mapping each character of s to the number of times it occurs",
       "count_chars('aba') == {'a': 2, 'b': 1}",
       "def count_chars(s):\n    out = {}\n    for c in s:\n        out[c] = out.get(c, 0) + 1\n    return out",
       "assert count_chars('aab') == {'a': 2, 'b': 1}", "assert count_chars('') == {}",
       "assert count_chars('xyzx') == {'x': 2, 'y': 1, 'z': 1}"),
    _p("second_largest", "second_largest(nums)",
       "returns the second largest distinct value of the list nums, or None when there is none",
       "second_largest([4, 1, 3]) == 3",
       "def second_largest(nums):\n    values = sorted(set(nums))\n    return values[-2] if len(values) >= 2 else None",
       "assert second_largest([1, 3, 2]) == 2", "assert second_largest([5, 5, 4]) == 4",
       "assert second_largest([7]) == None", "assert second_largest([2, 2]) == None"),
    _p("rotate_list", "rotate_list(xs, k)", "returns the list xs rotated k places to the right (k >= 0)",
       "rotate_list([1, 2, 3], 1) == [3, 1, 2]",
       "def rotate_list(xs, k):\n    if not xs:\n        return []\n    k %= len(xs)\n    return xs[-k:] + xs[:-k] if k else list(xs)",
       "assert rotate_list([1, 2, 3, 4, 5], 2) == [4, 5, 1, 2, 3]", "assert rotate_list([1, 2, 3], 0) == [1, 2, 3]",
       "assert rotate_list([1, 2, 3], 4) == [3, 1, 2]", "assert rotate_list([], 3) == []"),
    _p("is_balanced", "is_balanced(s)",
       "returns True when the brackets (), [] and {} in s are balanced and properly nested, else False",
       "is_balanced('{[]}') == True",
       "def is_balanced(s):\n    pairs = {')': '(', ']': '[', '}': '{'}\n    stack = []\n    for c in s:\n"
       "        if c in '([{':\n            stack.append(c)\n        elif c in pairs:\n"
       "            if not stack or stack.pop() != pairs[c]:\n                return False\n    return not stack",
       "assert is_balanced('([]{})') == True", "assert is_balanced('([)]') == False", "assert is_balanced('') == True",
       "assert is_balanced('(((') == False"),
    _p("roman_to_int", "roman_to_int(s)", "returns the integer value of the Roman numeral s", "roman_to_int('IX') == 9",
       "def roman_to_int(s):\n    v = {'I': 1, 'V': 5, 'X': 10, 'L': 50, 'C': 100, 'D': 500, 'M': 1000}\n    total = 0\n"
       "    for i, c in enumerate(s):\n        if i + 1 < len(s) and v[c] < v[s[i + 1]]:\n            total -= v[c]\n"
       "        else:\n            total += v[c]\n    return total",
       "assert roman_to_int('III') == 3", "assert roman_to_int('IV') == 4", "assert roman_to_int('MCMXCIV') == 1994",
       "assert roman_to_int('LVIII') == 58"),
    _p("int_to_binary", "int_to_binary(n)", "returns the binary representation of the non-negative integer n as a string, "
       "without a '0b' prefix", "int_to_binary(2) == '10'",
       "def int_to_binary(n):\n    return bin(n)[2:]",
       "assert int_to_binary(0) == '0'", "assert int_to_binary(5) == '101'", "assert int_to_binary(255) == '11111111'"),
    _p("chunk", "chunk(xs, size)", "splits the list xs into consecutive lists of length size (the last may be shorter)",
       "chunk([1, 2, 3], 2) == [[1, 2], [3]]",
       "def chunk(xs, size):\n    return [xs[i:i + size] for i in range(0, len(xs), size)]",
       "assert chunk([1, 2, 3, 4, 5], 2) == [[1, 2], [3, 4], [5]]", "assert chunk([], 3) == []",
       "assert chunk([1, 2], 5) == [[1, 2]]"),
    _p("transpose", "transpose(matrix)", "returns the transpose of the matrix given as a list of equal-length rows",
       "transpose([[1, 2]]) == [[1], [2]]",
       "def transpose(matrix):\n    return [list(col) for col in zip(*matrix)]",
       "assert transpose([[1, 2, 3], [4, 5, 6]]) == [[1, 4], [2, 5], [3, 6]]", "assert transpose([]) == []",
       "assert transpose([[1]]) == [[1]]"),
    _p("caesar_cipher", "caesar_cipher(s, shift)",
       "shifts every letter of s by shift places in the alphabet, wrapping around and keeping its case, "
       "and leaves other characters unchanged", "caesar_cipher('ab', 2) == 'cd'",
       "def caesar_cipher(s, shift):\n    out = []\n    for c in s:\n        if c.isalpha() and c.isascii():\n"
       "            base = ord('A') if c.isupper() else ord('a')\n            out.append(chr((ord(c) - base + shift) % 26 + base))\n"
       "        else:\n            out.append(c)\n    return ''.join(out)",
       "assert caesar_cipher('abc', 1) == 'bcd'", "assert caesar_cipher('xyz', 3) == 'abc'",
       "assert caesar_cipher('Hello, World!', 13) == 'Uryyb, Jbeyq!'"),
    _p("longest_common_prefix", "longest_common_prefix(words)",
       "returns the longest string that every string of the list words starts with ('' for an empty list)",
       "longest_common_prefix(['interview', 'internet']) == 'inter'",
       "def longest_common_prefix(words):\n    if not words:\n        return ''\n    prefix = words[0]\n"
       "    for w in words[1:]:\n        while not w.startswith(prefix):\n            prefix = prefix[:-1]\n    return prefix",
       "assert longest_common_prefix(['flower', 'flow', 'flight']) == 'fl'",
       "assert longest_common_prefix(['dog', 'car']) == ''", "assert longest_common_prefix([]) == ''",
       "assert longest_common_prefix(['same']) == 'same'"),
    _p("pascal_row", "pascal_row(n)", "returns row n of Pascal's triangle as a list, row 0 being [1]",
       "pascal_row(2) == [1, 2, 1]",
       "def pascal_row(n):\n    row = [1]\n    for _ in range(n):\n        row = [a + b for a, b in zip([0] + row, row + [0])]\n"
       "    return row",
       "assert pascal_row(0) == [1]", "assert pascal_row(4) == [1, 4, 6, 4, 1]", "assert pascal_row(1) == [1, 1]"),
)


def _split_of(problems: Sequence[Problem]) -> dict[str, list[Problem]]:
    ranked = sorted(problems, key=lambda p: (zlib.crc32(p.name.encode()), p.name))
    test = {p.name for p in ranked[:TEST_PROBLEMS]}
    return {
        "test": [p for p in problems if p.name in test],
        "train": [p for p in problems if p.name not in test],
    }


SPLITS = _split_of(PROBLEMS)


class CodeTask:
    """Rows: `prompt`, `answer` (reference solution), `tests` (hidden asserts), `entry_point`."""

    name = "code"

    def __init__(self, all_or_nothing: bool = False, timeout_s: float = 5.0):
        if not (isinstance(timeout_s, (int, float)) and timeout_s > 0):
            raise R1kitError(f"code task timeout_s must be a positive number of seconds, got {timeout_s!r}")
        self.all_or_nothing, self.timeout_s = bool(all_or_nothing), float(timeout_s)

    @staticmethod
    def row(p: Problem) -> dict[str, Any]:
        return {"prompt": p.prompt, "answer": p.solution, "tests": list(p.tests), "entry_point": p.name}

    def generate(self, split: str, n: int, seed: int = 0, **params: Any) -> list[dict[str, Any]]:
        """`n` rows of `split`: train cycles through its 24 problems in a seeded order (reshuffled
        every pass); test gives each of its 8 problems at most once."""
        if params:
            return CodeTask(**params).generate(split, n, seed)
        if split not in SPLITS:
            raise R1kitError(f"unknown split {split!r}; choose train or test")
        pool = SPLITS[split]
        if split == "test" and n > len(pool):
            raise R1kitError(f"the code task has {len(pool)} test problems; ask for at most {len(pool)} test rows")
        rng = random.Random(f"code-{seed}-{split}")
        rows: list[dict[str, Any]] = []
        while len(rows) < n:
            order = list(pool)
            rng.shuffle(order)
            rows.extend(self.row(p) for p in order[: n - len(rows)])
        return rows

    def extract_answer(self, text: str) -> str | None:
        code = extract_code(text)
        return code.strip() if code is not None else None

    def reward(
        self,
        completions: Sequence[Completion],
        answer: Sequence[Any],
        *,
        metrics: dict[str, float] | None = None,
        **columns: Any,
    ) -> list[float | None]:
        """The `code` reward against the rows' hidden `tests` (the reference `answer` is not used)."""
        return code_reward(
            completions,
            columns.get("tests"),
            all_or_nothing=self.all_or_nothing,
            timeout_s=self.timeout_s,
            metrics=metrics,
        )


TASK = CodeTask()
