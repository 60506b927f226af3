"""Guards against Whisper's known failures on long, noisy audio.

Nothing is silently dropped: what a guard removes comes back as a *discarded* piece with a reason,
so QA can see it.

- ``phantom``: subtitle-credit and video-outro phrases Whisper invents on silence and noise
  (字幕由Amara.org社群提供, 请不吝点赞 订阅 转发 打赏, 谢谢观看 …).
- ``repetition``: a unit repeated in a loop (铸铸铸铸铸, 肥脂肥脂肥脂肥脂): a 1-character unit 5+
  times, a 2–8-character unit 4+ times. Ordinary repeats (对对对, 好的好的好的) stay.
- ``no_speech``: Whisper itself says there was no speech (no_speech_prob > 0.6) and is unsure of
  its text (avg_logprob < -1.0).
- ``low_confidence``: avg_logprob < -1.5, text that is mostly noise.
- ``language``: a Mandarin deployment receiving a segment with no Chinese characters and 4+ Latin
  letters, or an English one receiving mostly Chinese (a language flip).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

__all__ = ["PHANTOMS", "Discard", "guard_text"]

PHANTOMS = (
    "字幕由amara.org社群提供",
    "由amara.org社群提供的字幕",
    "amara.org",
    "请不吝点赞订阅转发打赏支持明镜与点点栏目",
    "请不吝点赞订阅转发打赏",
    "明镜与点点栏目",
    "点赞订阅转发打赏",
    "谢谢观看",
    "感谢观看",
    "感谢您的观看",
    "欢迎订阅",
    "订阅我的频道",
    "字幕志愿者",
    "中文字幕志愿者",
    "优优独播剧场",
    "yoyotelevisionseriesexclusive",
    "李宗盛",
    "本字幕由",
    "字幕提供",
    "subtitlesbytheamara.orgcommunity",
    "thanksforwatching",
    "pleasesubscribe",
    "likeandsubscribe",
)
#: words of video outros: three different ones in one stretch are a phantom even when
#: misrecognised (请布林点赞订阅传发、打赏支持明镜，与点点栏目)
PHANTOM_MARKERS = ("点赞", "订阅", "转发", "打赏", "栏目", "字幕", "amara", "观看", "频道", "明镜", "点点", "关注")
_CLAUSE = re.compile(r"(?<=[，。！？、,.!?；;])")
_CJK = re.compile(r"[\u3400-\u9fff]")
_LATIN = re.compile(r"[A-Za-z]")
_SHORT_LOOP = re.compile(r"(.)\1{4,}")
_LONG_LOOP = re.compile(r"(.{2,8}?)\1{3,}")
_SQUEEZE = re.compile(r"[\s\W_]+", re.UNICODE)


@dataclass(frozen=True)
class Discard:
    text: str
    reason: str


def _squeeze(text: str) -> str:
    return _SQUEEZE.sub("", unicodedata.normalize("NFKC", text).lower().replace("．", "."))


def _cut_phantoms(text: str) -> tuple[str, list[Discard]]:
    norm = unicodedata.normalize("NFKC", text).lower()
    index = [i for i, ch in enumerate(norm) if not _SQUEEZE.fullmatch(ch) and ch != "."]
    squeezed = "".join(norm[i] for i in index)
    discards = []
    for phantom in sorted({p.replace(".", "") for p in PHANTOMS}, key=len, reverse=True):
        at = squeezed.find(phantom)
        while at >= 0:
            start, end = index[at], index[at + len(phantom) - 1] + 1
            while end < len(text) and _SQUEEZE.fullmatch(text[end]):  # its trailing punctuation
                end += 1
            discards.append(Discard(text[start:end].strip(), "phantom"))
            text = text[:start] + text[end:]
            norm = unicodedata.normalize("NFKC", text).lower()
            index = [i for i, ch in enumerate(norm) if not _SQUEEZE.fullmatch(ch) and ch != "."]
            squeezed = "".join(norm[i] for i in index)
            at = squeezed.find(phantom)
    return text.strip(), discards


def _cut_marker_phantoms(text: str) -> tuple[str, list[Discard]]:
    clauses = [c for c in _CLAUSE.split(text) if c]
    hits = [{m for m in PHANTOM_MARKERS if m in c.lower()} for c in clauses]
    marked = [i for i, h in enumerate(hits) if h]
    if len(set().union(*hits)) < 3:
        return text, []
    first, last = marked[0], marked[-1]
    cut = "".join(clauses[first : last + 1])
    return ("".join(clauses[:first]) + "".join(clauses[last + 1 :])).strip(), [Discard(cut.strip(), "phantom")]


def _cut_loops(text: str) -> tuple[str, list[Discard]]:
    discards = []
    for pattern in (_SHORT_LOOP, _LONG_LOOP):
        m = pattern.search(text)
        while m:
            if m.group(1).strip():
                end = m.end() if len(text) - m.end() > 2 else len(text)  # a loop's ragged tail goes too
                discards.append(Discard(text[m.start() : end], "repetition"))
                text = text[: m.start()] + text[end:]
                m = pattern.search(text)
            else:
                m = pattern.search(text, m.end())
    return text.strip(), discards


def guard_text(
    text: str,
    *,
    language: str | None,
    avg_logprob: float,
    no_speech_prob: float,
) -> tuple[str, list[Discard]]:
    """Return the text to keep ('' when nothing is) and what was discarded, with reasons."""
    if not text.strip():
        return "", []
    if no_speech_prob > 0.6 and avg_logprob < -1.0:
        return "", [Discard(text, "no_speech")]
    if avg_logprob < -1.5:
        return "", [Discard(text, "low_confidence")]
    text, discards = _cut_marker_phantoms(text)
    text, more = _cut_phantoms(text)
    discards += more
    text, loops = _cut_loops(text)
    discards += loops
    if text:
        cjk, latin = len(_CJK.findall(text)), len(_LATIN.findall(text))
        flipped = (
            (language or "").startswith("zh") and cjk == 0 and latin >= 4
        ) or (language == "en" and cjk > max(latin, 3))
        if flipped:
            discards.append(Discard(text, "language"))
            text = ""
    if text and not re.search(r"\w", text):  # punctuation left over
        text = ""
    return text, discards
