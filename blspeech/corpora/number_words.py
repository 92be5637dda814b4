"""Numbers as spoken English words, the way transcripts of telephone speech write them.

Transcripts in Kaldi corpora spell numbers out (``twenty five``, not ``25``), so that the
acoustic model learns the words that are actually said. How a number is said depends on
what it is: a quantity (``one hundred twenty three``), an ordinal (``twenty third``), a
year (``nineteen ninety nine``), a clock time (``nine oh five p m``), money (``twelve
dollars and fifty cents``) or a string of digits read one by one (``five five five``).
Each has its own function here; :func:`expand_numbers` rewrites the digits left in free
text (prompt transcripts) as quantities.

American conventions: no ``and`` inside quantities, no hyphens (``twenty one``), letters
of ``a m`` / ``p m`` as separate words.

Example:
    >>> number_to_words(1234)
    'one thousand two hundred thirty four'
    >>> ordinal_words(23), year_words(2024), time_words(21, 5)
    ('twenty third', 'twenty twenty four', 'nine oh five p m')
    >>> money_words(12, 50), digit_words("5550142", zero="oh")
    ('twelve dollars and fifty cents', 'five five five oh one four two')
    >>> expand_numbers("press 1 for a 28.8 kilobit modem")
    'press one for a twenty eight point eight kilobit modem'
"""

from __future__ import annotations

import re

_ONES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
         "ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen",
         "seventeen", "eighteen", "nineteen")
_TENS = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")
_SCALES = ((10**9, "billion"), (10**6, "million"), (1000, "thousand"))
#: Ordinal forms that are not simply the cardinal plus ``th``.
_IRREGULAR_ORDINALS = {"one": "first", "two": "second", "three": "third", "five": "fifth",
                       "eight": "eighth", "nine": "ninth", "twelve": "twelfth"}


def _below_thousand(n: int) -> list[str]:
    words: list[str] = []
    hundreds, rest = divmod(n, 100)
    if hundreds:
        words += [_ONES[hundreds], "hundred"]
    if rest >= 20:
        tens, ones = divmod(rest, 10)
        words.append(_TENS[tens])
        if ones:
            words.append(_ONES[ones])
    elif rest:
        words.append(_ONES[rest])
    return words


def number_to_words(n: int) -> str:
    """A whole number (below one trillion in size) as a quantity: 105 -> 'one hundred five'.

    Example:
        >>> number_to_words(0), number_to_words(-7), number_to_words(2_000_019)
        ('zero', 'minus seven', 'two million nineteen')
    """
    if not isinstance(n, int) or isinstance(n, bool):
        raise TypeError(f"number_to_words needs an int, got {type(n).__name__}")
    if n < 0:
        return "minus " + number_to_words(-n)
    if n >= 10**12:
        raise ValueError(f"{n} is too large (the limit is below one trillion)")
    if n == 0:
        return "zero"
    words: list[str] = []
    for value, name in _SCALES:
        count, n = divmod(n, value)
        if count:
            words += _below_thousand(count) + [name]
    words += _below_thousand(n)
    return " ".join(words)


def ordinal_words(n: int) -> str:
    """A positive whole number as an ordinal: 1 -> 'first', 42 -> 'forty second'.

    Example:
        >>> [ordinal_words(n) for n in (1, 2, 3, 12, 20, 101)]
        ['first', 'second', 'third', 'twelfth', 'twentieth', 'one hundred first']
    """
    if n <= 0:
        raise ValueError(f"ordinals start at 1, got {n}")
    *head, last = number_to_words(n).split()
    if last in _IRREGULAR_ORDINALS:
        last = _IRREGULAR_ORDINALS[last]
    elif last.endswith("y"):
        last = last[:-1] + "ieth"  # twenty -> twentieth
    else:
        last += "th"
    return " ".join([*head, last])


def year_words(year: int) -> str:
    """A calendar year as people say it: 1999 -> 'nineteen ninety nine'.

    Years 2000-2009 are said as quantities ('two thousand five'); other years as two
    pairs of digits, with 'hundred' for a round century and 'oh' for 01-09.

    Example:
        >>> [year_words(y) for y in (1900, 1905, 1999, 2000, 2007, 2010, 2024)]
        ... # doctest: +NORMALIZE_WHITESPACE
        ['nineteen hundred', 'nineteen oh five', 'nineteen ninety nine', 'two thousand',
         'two thousand seven', 'twenty ten', 'twenty twenty four']
    """
    if not 1000 <= year <= 9999:
        raise ValueError(f"year_words expects a four-digit year, got {year}")
    if 2000 <= year <= 2009:
        return number_to_words(year)
    high, low = divmod(year, 100)
    if low == 0:
        return f"{number_to_words(high)} hundred"
    if low < 10:
        return f"{number_to_words(high)} oh {number_to_words(low)}"
    return f"{number_to_words(high)} {number_to_words(low)}"


def digit_words(digits: str, zero: str = "zero") -> str:
    """A digit string read one digit at a time; ``zero`` may be 'zero' or 'oh'.

    Example:
        >>> digit_words("0427"), digit_words("0427", zero="oh")
        ('zero four two seven', 'oh four two seven')
    """
    if not digits.isdigit() or not digits.isascii():
        raise ValueError(f"digit_words expects a string of digits 0-9, got {digits!r}")
    if zero not in ("zero", "oh"):
        raise ValueError(f"zero must be 'zero' or 'oh', got {zero!r}")
    return " ".join(zero if d == "0" else _ONES[int(d)] for d in digits)


def pair_words(n: int) -> str:
    """A 1-4 digit number said in pairs, as for house, room and flight numbers.

    Example:
        >>> [pair_words(n) for n in (7, 42, 305, 1200, 2117, 1005)]
        ... # doctest: +NORMALIZE_WHITESPACE
        ['seven', 'forty two', 'three oh five', 'twelve hundred', 'twenty one seventeen',
         'ten oh five']
    """
    if not 0 <= n <= 9999:
        raise ValueError(f"pair_words expects 0-9999, got {n}")
    if n < 100:
        return number_to_words(n)
    high, low = divmod(n, 100)
    if low == 0:
        return f"{number_to_words(high)} hundred"
    if low < 10:
        return f"{number_to_words(high)} oh {number_to_words(low)}"
    return f"{number_to_words(high)} {number_to_words(low)}"


def time_words(hour: int, minute: int, style: str = "ampm") -> str:
    """A clock time (24-hour input) in a 12-hour spoken style.

    Styles: ``ampm`` ('nine thirty a m', 'ten a m' on the hour), ``oclock`` ('ten
    o'clock', 'nine thirty'), ``plain`` ('nine thirty'). Noon and midnight on the hour are
    said as such in every style.

    Example:
        >>> time_words(9, 30), time_words(14, 0), time_words(14, 0, "oclock")
        ('nine thirty a m', 'two p m', "two o'clock")
        >>> time_words(12, 0), time_words(0, 15), time_words(7, 5, "plain")
        ('noon', 'twelve fifteen a m', 'seven oh five')
    """
    if not (0 <= hour <= 23 and 0 <= minute <= 59):
        raise ValueError(f"not a clock time: {hour}:{minute:02d}")
    if style not in ("ampm", "oclock", "plain"):
        raise ValueError(f"time style must be ampm, oclock or plain, got {style!r}")
    if minute == 0 and hour in (0, 12):
        return "midnight" if hour == 0 else "noon"
    words = [number_to_words(hour % 12 or 12)]
    if minute == 0:
        if style == "oclock":
            words.append("o'clock")
    elif minute < 10:
        words += ["oh", number_to_words(minute)]
    else:
        words.append(number_to_words(minute))
    if style == "ampm":
        words += ["a", "m"] if hour < 12 else ["p", "m"]
    return " ".join(words)


def money_words(dollars: int, cents: int = 0) -> str:
    """An amount in US dollars and cents: (1, 5) -> 'one dollar and five cents'.

    Example:
        >>> money_words(1), money_words(0, 99), money_words(1250, 1)
        ('one dollar', 'ninety nine cents', 'one thousand two hundred fifty dollars and one cent')
    """
    if dollars < 0 or not 0 <= cents <= 99:
        raise ValueError(f"not an amount: {dollars} dollars {cents} cents")
    parts = []
    if dollars or not cents:
        parts.append(f"{number_to_words(dollars)} dollar{'' if dollars == 1 else 's'}")
    if cents:
        parts.append(f"{number_to_words(cents)} cent{'' if cents == 1 else 's'}")
    return " and ".join(parts)


def decimal_words(text: str) -> str:
    """A decimal number as read aloud: '28.8' -> 'twenty eight point eight'.

    Example:
        >>> decimal_words("3.14"), decimal_words("0.05")
        ('three point one four', 'zero point zero five')
    """
    whole, _, fraction = text.partition(".")
    if not whole.isdigit() or not fraction.isdigit():
        raise ValueError(f"not a decimal number: {text!r}")
    return f"{number_to_words(int(whole))} point {digit_words(fraction)}"


_ORDINAL_RE = re.compile(r"\b(\d+)(?:st|nd|rd|th)\b", re.IGNORECASE)
_MONEY_RE = re.compile(r"\$(\d+)(?:\.(\d\d))?\b")
_DECIMAL_RE = re.compile(r"\b\d+\.\d+\b")
_NUMBER_RE = re.compile(r"\d+")


def expand_numbers(text: str) -> str:
    """Rewrite the numbers in free text as words: money, ordinals, decimals, quantities.

    Digits glued to letters are split off ('3D' -> 'three D'); '%' becomes 'percent'.
    Strings of digits that people read digit by digit (phone numbers, codes) cannot be
    told from quantities here: text that has them should be written with
    :func:`digit_words` instead.

    Example:
        >>> expand_numbers("a $5.25 fee, due on the 3rd; 3D audio at 50%")
        'a five dollars and twenty five cents fee, due on the third; three D audio at fifty percent'
    """
    text = _MONEY_RE.sub(lambda m: money_words(int(m[1]), int(m[2] or 0)), text)
    text = _ORDINAL_RE.sub(lambda m: ordinal_words(int(m[1])), text)
    text = _DECIMAL_RE.sub(lambda m: decimal_words(m[0]), text)
    text = text.replace("%", " percent")
    text = _NUMBER_RE.sub(lambda m: f" {number_to_words(int(m[0]))} ", text)
    return re.sub(r"[ \t]+", " ", text).strip()
