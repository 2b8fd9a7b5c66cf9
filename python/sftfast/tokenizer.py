"""Loading tokenizers: a ``tokenizer.json`` path, a model directory, a ``tokenizers.Tokenizer``
or a transformers fast tokenizer, each loaded once per process (keyed by content hash)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sftfast import _native
from sftfast.exceptions import TokenizerError

__all__ = ["Tokenizer", "load_tokenizer"]



@dataclass(frozen=True)
class Tokenizer:
    """A tokenizer loaded into sftfast's native registry.

    Plugins and steps pass only ``key`` (the xxh3-128 hash of the JSON) and ``path``, never the
    JSON itself.

    Attributes
    ----------
    key : str
        Content hash of ``tokenizer.json``.
    path : str or None
        The file it came from (lets another process reload it), if any.
    fast_path : bool
        Whether counts use sftfast's own exact BPE path (otherwise the reference pipeline of the
        ``tokenizers`` crate, still exact).
    fast_path_reason : str or None
        Why the fast path is off.
    config : dict
        ``tokenizer_config.json`` of a model directory (chat template etc.), else empty.
    """

    key: str
    path: str | None
    fast_path_reason: str | None
    config: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def fast_path(self) -> bool:
        return self.fast_path_reason is None

    @property
    def encode_fast_path_reason(self) -> str | None:
        """Why token ids with offsets (used by ``render``) come from the reference pipeline of
        the ``tokenizers`` crate rather than sftfast's own exact path; ``None`` when they do
        not."""
        return _native.encode_fast_path_reason(self.key, path=self.path)

    @classmethod
    def from_json(cls, text: str) -> Tokenizer:
        """Load from the text of a ``tokenizer.json``."""
        key, reason = _native.load_tokenizer_json(text)
        return cls(key=key, path=None, fast_path_reason=reason)


_PATH_CACHE: dict[tuple[str, int, int], Tokenizer] = {}


def _from_path(p: Path) -> Tokenizer:
    config: dict[str, Any] = {}
    if p.is_dir():
        cfg = p / "tokenizer_config.json"
        if cfg.is_file():
            config = json.loads(cfg.read_text(encoding="utf-8"))
        p = p / "tokenizer.json"
    if not p.is_file():
        raise TokenizerError(f"tokenizer: no tokenizer.json at {str(p)!r}")
    st = p.stat()
    cache_key = (str(p.resolve()), st.st_mtime_ns, st.st_size)
    hit = _PATH_CACHE.get(cache_key)
    if hit is not None:
        return hit
    key, reason = _native.load_tokenizer_path(str(p))
    tok = Tokenizer(key=key, path=str(p.resolve()), fast_path_reason=reason, config=config)
    _PATH_CACHE[cache_key] = tok
    return tok


def load_tokenizer(source: Any) -> Tokenizer:
    """Load a tokenizer once per process.

    Parameters
    ----------
    source
        A path to ``tokenizer.json``, a model directory holding one (its
        ``tokenizer_config.json`` is read too), a ``tokenizers.Tokenizer``, a transformers fast
        tokenizer, or an already loaded :class:`Tokenizer`. Padding and truncation settings of
        the source are ignored.

    Returns
    -------
    Tokenizer

    Raises
    ------
    TokenizerError
        When the source is not a tokenizer sftfast can read.

    Examples
    --------
    >>> import sftfast
    >>> tok = sftfast.demo_tokenizer()
    >>> sftfast.load_tokenizer(tok) is tok
    True
    """
    if isinstance(source, Tokenizer):
        return source
    if isinstance(source, (str, os.PathLike)):
        return _from_path(Path(source))
    backend = getattr(source, "backend_tokenizer", None)  # transformers fast tokenizers
    if backend is not None and hasattr(backend, "to_str"):
        tok = Tokenizer.from_json(backend.to_str())
        init = getattr(source, "init_kwargs", None)
        config = dict(init) if isinstance(init, dict) else {}
        template = getattr(source, "chat_template", None)
        if template is not None:
            config["chat_template"] = template
        return Tokenizer(tok.key, None, tok.fast_path_reason, config)
    if hasattr(source, "to_str") and type(source).__module__.startswith("tokenizers"):
        return Tokenizer.from_json(source.to_str())
    raise TokenizerError(
        "tokenizer: expected a path to tokenizer.json, a model directory, a "
        f"tokenizers.Tokenizer or a transformers fast tokenizer, got {type(source).__name__}"
    )
