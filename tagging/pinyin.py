"""Sound-alike matching for recognition errors: 热马吉 → 热玛吉, 超声导 → 超声刀, 斗印 → 痘印.

Every Chinese character is replaced by one private-use character that stands for its toneless
pinyin, so a string keeps its length (offsets stay valid) and an Aho-Corasick automaton can match
terms by sound. Terms of three or more characters also match with the initials and finals that
Mandarin speakers (and Whisper) confuse merged: zh/z, ch/c, sh/s, n/l, -ng/-n.

Sound-alikes of short terms collide with everyday words, so a match must also share at least
one character with the term, and for two-character terms the other character must not be one of
the most common characters (有皮 is not 油皮).
"""

from __future__ import annotations

import re
import threading

__all__ = ["SoundIndex", "COMMON_CHARS"]

#: very frequent characters: a two-character sound-alike whose differing character is one of these is
#: an ordinary word, not a recognition error
COMMON_CHARS = frozenset(
    "的一是不了在人有我他这个们中来上大为和国地到以说时要就出会可也你对生能而子那得于着下自之年过发后"
    "作里用道行所然家种事成方多经么去法学如都同现当没动面起看定天分还进好小部其些主样理心她本前开但因只"
    "从想实日者意无力它与长把机十民第公此已工使情明性知全三又关点正业外将两高间由问很最重并物手应向头文"
    "体相见被利什二等产或新己制身果加月话合回特代内信表化老给世位次度门任常先通教儿原东声提立及比员解水"
    "名真论处走义各入几口认条平系气题活更别打女变四神总何电数安少报才结反受目太量再感建务做接必场件计管"
    "期市直资命金指许区保至形便空决展科司五基眼书非则听白却界达放强即像难且权思象完设式色路记品住告类求"
    "据程边死该交规万取拉格望觉术领共确传师观清今切院让识候带导争运笑飞风步改收根干造言联持组每车亲极服"
    "快办议往元士证近失转夫令准布始怎呢存未远叫台单影具字爱流备连调深商算质团集百需价花城级整离况请技际"
    "约示复病息究线似火断精满支视消越器容照须九增研写称八功吗包片史委乎查轻易早曾除找装广显吧阿标谈吃图"
    "念六引历首医局突专费号尽另周较注语仅考落青随选列红响虽推势参希古众构房半节土投某案黑维致足态护七兴"
    "派孩验责营星够章音跟志底站严巴例防供效续施留讲型料终答紧黄绝奇察母段依批群项故按河米围害斗双境客"
    "呀啊哦嗯嘛啦哈哪您咱俩"
)
_FUZZY = [(re.compile(r"^zh"), "z"), (re.compile(r"^ch"), "c"), (re.compile(r"^sh"), "s"),
          (re.compile(r"^n"), "l"), (re.compile(r"ng$"), "n")]
_PUA = 0xE000  # private-use area: never in real text


def _is_cjk(ch: str) -> bool:
    return "\u3400" <= ch <= "\u9fff"


class SoundIndex:
    """Maps text to sound strings (exact toneless pinyin, or fuzzy), one code per character."""

    def __init__(self) -> None:
        self._codes: dict[str, int] = {}
        self._exact: dict[str, str] = {}
        self._fuzzy: dict[str, str] = {}
        self._exact_tr: dict[int, str] = {}  # str.translate tables of the two maps
        self._fuzzy_tr: dict[int, str] = {}
        self._canonical_tr: dict[int, tuple[int, dict[int, str]]] = {}  # per map: (characters known, table)
        self._lock = threading.Lock()

    def _code(self, syllable: str) -> str:
        n = self._codes.get(syllable)
        if n is None:
            n = self._codes[syllable] = len(self._codes)
        return chr(_PUA + n)

    def _learn(self, ch: str) -> None:
        from pypinyin import Style, lazy_pinyin

        syl = lazy_pinyin(ch, style=Style.NORMAL, errors="ignore")
        syl = syl[0] if syl else ch
        fuzzy = syl
        for pattern, repl in _FUZZY:
            fuzzy = pattern.sub(repl, fuzzy)
        with self._lock:
            self._exact[ch] = self._code(syl)
            self._fuzzy[ch] = self._code("~" + fuzzy)

    def _learn_all(self, text: str) -> None:
        for ch in set(text).difference(self._fuzzy):
            if _is_cjk(ch):
                self._learn(ch)

    def sounds(self, text: str, *, fuzzy: bool) -> str:
        """Same length as *text*: each Chinese character → its sound code; others unchanged."""
        self._learn_all(text)
        table = self._fuzzy if fuzzy else self._exact
        tr = self._fuzzy_tr if fuzzy else self._exact_tr
        if len(tr) != len(table):  # new characters learned: rebuild the translation table
            tr = {ord(ch): code for ch, code in table.items()}
            if fuzzy:
                self._fuzzy_tr = tr
            else:
                self._exact_tr = tr
        return text.translate(tr)

    def canonical(self, text: str, representatives: dict[str, str], keep: frozenset[str]) -> str:
        """Same length as *text*: a Chinese character that is not in *keep* (the characters the
        taxonomy uses) becomes the taxonomy's character of the same fuzzy sound, if there is one
        (连 → 脸, 班 → 斑): what the speaker probably said, for patterns to match."""
        self._learn_all(text)
        learned, table = self._canonical_tr.get(id(representatives), (-1, {}))
        if learned != len(self._fuzzy):  # characters learned since the table was built
            table = {
                ord(ch): representatives[code]
                for ch, code in self._fuzzy.items()
                if ch not in keep and code in representatives
            }
            self._canonical_tr[id(representatives)] = (len(self._fuzzy), table)
        return text.translate(table)

    def representatives(self, chars: dict[str, int]) -> dict[str, str]:
        """Fuzzy sound code → the most used of *chars* (character → how often the taxonomy uses it)."""
        best: dict[str, tuple[int, str]] = {}
        for ch, n in chars.items():
            if not _is_cjk(ch):
                continue
            self._learn_all(ch)
            code = self._fuzzy[ch]
            if code not in best or n > best[code][0]:
                best[code] = (n, ch)
        return {code: ch for code, (n, ch) in best.items()}

    @staticmethod
    def plausible(term: str, surface: str) -> bool:
        """A sound-alike *surface* of *term* counts as a recognition error of it (see module doc)."""
        if surface == term or len(surface) != len(term):
            return False
        shared = [a == b for a, b in zip(term, surface)]
        if not any(shared):
            return False
        if len(term) <= 2:
            return not any(b in COMMON_CHARS for a, b in zip(term, surface) if a != b)
        return True

    @staticmethod
    def eligible(term: str) -> bool:
        return len(term) >= 2 and all(_is_cjk(c) for c in term)
