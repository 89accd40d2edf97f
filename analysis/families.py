"""A model's architecture family: ``resnet50`` -> ``resnet``, ``tf_efficientnet_lite0`` -> ``efficientnet_lite``.

A heuristic on timm-style names, so per-family statistics group hundreds of variants into a
few dozen families. The rule (documented in docs/analysis.md, tested in tests/test_analysis_families.py):

1. Take the architecture name (``models.architecture``); without one, the model id with its
   source prefix (``timm:``, ``hf-hub:org/``), any folder part and the pretrained tag (after the
   first ``.``) removed. Lower-case it.
2. Drop one provenance prefix: ``tf_``, ``gluon_``, ``legacy_``, ``ig_``, ``ssl_``, ``swsl_``, ``dm_``, ``tv_``.
3. Split on ``_``. The first token is always kept, with a trailing number and up to two
   letters removed (``resnet50d`` -> ``resnet``, ``dla60x`` -> ``dla``), except that a version
   number right after a ``v`` stays (``mobilenetv3``, ``resnetv2``).
4. Later tokens are appended while they are words (3+ letters) that are not size or variant
   words (tiny, small, base, large, rw, conv, ...): ``wide_resnet50_2`` -> ``wide_resnet``.
   A version token ``v2`` is glued on without the underscore (``mobilenet_v2`` -> ``mobilenetv2``,
   so torchvision and timm spellings meet), and a word followed by a number (``lite0``,
   ``resnet50``) contributes its word and ends the name. Anything else ends the name.
"""

from __future__ import annotations

import re

PREFIXES: tuple[str, ...] = ("tf_", "gluon_", "legacy_", "ig_", "ssl_", "swsl_", "dm_", "tv_")

#: Tokens that name a size or a variant of a family rather than the family itself.
VARIANT_WORDS: frozenset[str] = frozenset(
    [
        *("atto", "femto", "pico", "nano", "micro", "tiny", "small", "base", "medium", "large", "huge", "giant"),
        *("xlarge", "xs", "s", "m", "l", "xl", "xxl"),
        *("rw", "gn", "bn", "ln", "conv", "hybrid", "minimal", "pruned", "distilled"),
    ]
)

_FIRST = re.compile(r"^(?P<word>.*?[a-z])(?P<num>\d+)[a-z]{0,2}$")
_VERSION = re.compile(r"^v\d+$")
_WORD_NUM = re.compile(r"^(?P<word>[a-z]{3,})\d+[a-z]{0,2}$")


def base_name(name: str) -> str:
    """The architecture part of a model id or architecture name (no source, folder or tag)."""
    text = name.strip().lower()
    if ":" in text:
        text = text.split(":", 1)[1]
    text = text.rsplit("/", 1)[-1]
    return text.split(".", 1)[0]


def _first_token(token: str) -> str:
    match = _FIRST.match(token)
    if not match:
        return token
    word = match.group("word")
    if word.endswith("v"):  # mobilenetv3, resnetv2: the version is part of the family
        return word + match.group("num")
    return word


def family(name: str | None) -> str | None:
    """The architecture family of a model or architecture name; None for an empty name."""
    if name is None:
        return None
    text = base_name(name)
    for prefix in PREFIXES:
        if text.startswith(prefix) and len(text) > len(prefix):
            text = text[len(prefix) :]
            break
    tokens = [t for t in text.split("_") if t]
    if not tokens:
        return None
    parts = [_first_token(tokens[0])]
    for token in tokens[1:]:
        if _VERSION.match(token):
            parts[-1] += token
            break
        if token.isalpha() and len(token) >= 3 and token not in VARIANT_WORDS:
            parts.append(token)
            continue
        match = _WORD_NUM.match(token)
        if match and match.group("word") not in VARIANT_WORDS:
            parts.append(match.group("word"))
        break
    return "_".join(parts)
