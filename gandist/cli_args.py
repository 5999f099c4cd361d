"""Typed command-line values: a bad value is one line that names the option, exit status 2.

Every option that takes a value declares one of these types (or `choices`), so argparse itself
refuses `--n 0`, `--seeds a,b` or `--v ""` before any work starts, with a message such as

    gandist generate: error: argument --n: expected an integer >= 1, got '0'

Each type carries its domain (`min`, `max`, `min_len`) as plain attributes: the table-driven CLI test
reads them to know which probe values must be refused, and fails for an option that has no such type.
No torch, no project imports: building the parser stays cheap (`--help`, shell completion).
"""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (no usage block) and exit status 2."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: error: {message} (see {self.prog} --help)\n")
        sys.exit(2)


class ArgType:
    """Base of the typed values; `kind` groups them for the CLI test ('int', 'float', 'seeds', 'names', 'text')."""

    kind = "text"

    def __call__(self, text: str):
        raise NotImplementedError

    def _fail(self, what: str, text: str) -> NoReturn:
        # argparse prefixes "argument --opt: ", so the message names the option and the value
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")


class Int(ArgType):
    """An integer in [min, max]."""

    kind = "int"

    def __init__(self, min: int | None = None, max: int | None = None) -> None:
        self.min, self.max = min, max

    def _what(self) -> str:
        if self.min is not None and self.max is not None:
            return f"an integer from {self.min} to {self.max}"
        if self.min is not None:
            return f"an integer >= {self.min}"
        if self.max is not None:
            return f"an integer <= {self.max}"
        return "an integer"

    def __call__(self, text: str) -> int:
        try:
            value = int(text.strip())
        except ValueError:
            self._fail(self._what(), text)
        if (self.min is not None and value < self.min) or (self.max is not None and value > self.max):
            self._fail(self._what(), text)
        return value

    def __repr__(self) -> str:  # shown by argparse in some messages and by the CLI test
        return f"Int(min={self.min}, max={self.max})"


class Float(ArgType):
    """A finite float in [min, max]."""

    kind = "float"

    def __init__(self, min: float | None = None, max: float | None = None) -> None:
        self.min, self.max = min, max

    def __call__(self, text: str) -> float:
        lo = "" if self.min is None else f" >= {self.min}"
        hi = "" if self.max is None else f" <= {self.max}"
        what = f"a number{lo}{' and' if lo and hi else ''}{hi}"
        try:
            value = float(text.strip())
        except ValueError:
            self._fail(what, text)
        if value != value or value in (float("inf"), float("-inf")):
            self._fail(what, text)
        if (self.min is not None and value < self.min) or (self.max is not None and value > self.max):
            self._fail(what, text)
        return value


# torch.Generator.manual_seed takes at most an unsigned 64-bit value
SEED_MAX = 2**63 - 1


class Seeds(ArgType):
    """A seed list: '1,2,5-7' -> [1, 2, 5, 6, 7]; each seed in [0, 2^63 - 1], at least `min_len` of them."""

    kind = "seeds"
    min = 0

    def __init__(self, min_len: int = 1) -> None:
        self.min_len = min_len

    def __call__(self, text: str) -> list[int]:
        what = f"a comma list of {'at least ' + str(self.min_len) + ' ' if self.min_len > 1 else ''}seeds >= 0 like 1,2,5-7"
        out: list[int] = []
        for part in text.split(","):
            part = part.strip()
            if not part:
                self._fail(what, text)
            lo, sep, hi = part.partition("-")
            try:
                if sep and lo:  # a range lo-hi ('-3' alone is a negative seed, refused below)
                    first, last = int(lo), int(hi)
                    if last < first:
                        self._fail(what + f" (range {part} is empty)", text)
                    out.extend(range(first, last + 1))
                else:
                    out.append(int(part))
            except ValueError:
                self._fail(what, text)
        if len(out) < self.min_len or any(not 0 <= s <= SEED_MAX for s in out):
            self._fail(what, text)
        return out


class Names(ArgType):
    """A comma list of names, e.g. 'fid,kid'; returned as the cleaned comma string (what callers split).
    Which names exist is the consumer's check (registries grow); this refuses empty lists and items."""

    kind = "names"

    def __call__(self, text: str) -> str:
        items = [x.strip() for x in text.split(",")]
        if not text.strip() or any(not x for x in items):
            self._fail("a comma list of names like fid,kid", text)
        return ",".join(items)


class Text(ArgType):
    """Free text (a path, a config name, KEY=VALUE): anything but the empty string."""

    kind = "text"

    def __call__(self, text: str) -> str:
        if not text.strip():
            self._fail("a non-empty value", text)
        return text
