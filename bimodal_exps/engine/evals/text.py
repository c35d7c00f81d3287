"""Text-side evaluations of the text tower: word similarity, Lee document similarity and sentence similarity
(STS-B, SentEval STS12-16 / STSBenchmark / SICK-R), all as correlations between cosine similarity and human
scores (README "Evaluations").

Readers take the files in their published formats and return (first texts, second texts, gold scores);
`correlations` scores an `encode(texts) -> unit vectors` function on them.
"""
from __future__ import annotations

import csv
import gzip
import importlib.util
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from scipy.stats import pearsonr, spearmanr

from dataset.errors import DataError
from dataset.zeroshot import openai_templates

Encode = Callable[[list[str]], torch.Tensor]
Pairs = tuple[list[str], list[str], list[float]]

GENSIM_WORD_SETS = {"ws353": "wordsim353.tsv", "simlex999": "simlex999.txt"}
ITRA_WORD_SETS = {"rg65": "rg65.csv", "simlex999": "simlex999.csv", "ws353": "wordsim353.csv"}
SENTEVAL_YEARS = {
    "sts12": ("STS12-en-test", ("MSRpar", "MSRvid", "SMTeuroparl", "surprise.OnWN", "surprise.SMTnews")),
    "sts13": ("STS13-en-test", ("FNWN", "headlines", "OnWN")),
    "sts14": ("STS14-en-test", ("deft-forum", "deft-news", "headlines", "images", "OnWN", "tweet-news")),
    "sts15": ("STS15-en-test", ("answers-forums", "answers-students", "belief", "headlines", "images")),
    "sts16": ("STS16-en-test", ("answer-answer", "headlines", "plagiarism", "postediting", "question-question")),
}


def gensim_test_file(name: str) -> Path | None:
    """A file of the installed gensim package's test data (`gensim/test/test_data/`), or None without gensim."""
    spec = importlib.util.find_spec("gensim")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "test" / "test_data" / name
    return path if path.is_file() else None


def read_word_pairs(path: Path) -> Pairs:
    """Word pairs and human scores: gensim's tab-separated files (`#` comments) or ITRA's `word1;word2;score`."""
    first, second, scores = [], [], []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.split("\t") if "\t" in line else line.split(";")
        try:
            first.append(fields[0].strip())
            second.append(fields[1].strip())
            scores.append(float(fields[2]))
        except (IndexError, ValueError):
            raise DataError(f"{path}:{number}: expected 'word1<TAB or ;>word2<TAB or ;>score', got {line!r}") from None
    return first, second, scores


def expand_with_templates(pairs: Pairs, templates: Sequence[str]) -> Pairs:
    """Each word pair becomes one item per prompt template (both words in the same template, same score)."""
    first, second, scores = pairs
    return ([t.format(w) for w in first for t in templates], [t.format(w) for w in second for t in templates],
            [s for s in scores for _ in templates])


def word_sim_templates(name: str) -> list[str]:
    """`imagenet`: the 80 CLIP ImageNet prompts (ITRA's default); `none`: the bare word."""
    return openai_templates() if name == "imagenet" else ["{}"]


def read_lee(corpus: Path, similarities: Path) -> tuple[list[str], np.ndarray]:
    """The 50 Lee news documents and the 50×50 human similarity matrix (gensim's `lee.cor`,
    `similarities0-1.txt`)."""
    documents = [line.strip() for line in corpus.read_text(encoding="latin-1").splitlines() if line.strip()]
    matrix = np.loadtxt(similarities)
    if matrix.shape != (len(documents), len(documents)):
        raise DataError(f"{similarities}: a {matrix.shape} matrix for {len(documents)} documents in {corpus}")
    return documents, matrix


def lee_correlations(encode: Encode, documents: list[str], matrix: np.ndarray) -> dict[str, float]:
    """Pearson r and Spearman ρ (×100) between document cosines and the human scores of the 1,225 pairs
    above the diagonal."""
    features = encode(documents).float().cpu()
    cosine = (features @ features.T).numpy()
    upper = np.triu_indices(len(documents), k=1)
    return {"lee_pearson": 100.0 * float(pearsonr(cosine[upper], matrix[upper])[0]),
            "lee_spearman": 100.0 * float(spearmanr(cosine[upper], matrix[upper])[0])}


def pair_spearman(encode: Encode, pairs: Pairs) -> float:
    """Spearman ρ (×100) between cos(e1, e2) and the gold scores; texts are encoded once each."""
    first, second, scores = pairs
    vocabulary = list(dict.fromkeys(first + second))
    features = encode(vocabulary).float().cpu()
    row = {text: i for i, text in enumerate(vocabulary)}
    a = features[[row[t] for t in first]]
    b = features[[row[t] for t in second]]
    return 100.0 * float(spearmanr((a * b).sum(dim=1).numpy(), scores)[0])


def read_sts_benchmark(path: Path) -> dict[str, Pairs]:
    """sentence-transformers' `stsbenchmark.tsv.gz` (header `split genre dataset year sid score sentence1
    sentence2`) as {split: pairs} for dev and test."""
    splits: dict[str, Pairs] = {}
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as handle:
        reader = csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        missing = {"split", "score", "sentence1", "sentence2"} - set(reader.fieldnames or ())
        if missing:
            raise DataError(f"{path}: no column(s) {', '.join(sorted(missing))} in the header")
        for row in reader:
            first, second, scores = splits.setdefault(row["split"], ([], [], []))
            first.append(row["sentence1"])
            second.append(row["sentence2"])
            scores.append(float(row["score"]))
    return splits


def _sentence(text: str) -> str:
    """SentEval's convention: an empty sentence becomes '.'."""
    return text.strip() or "."


def read_senteval_year(folder: Path, names: Sequence[str]) -> Pairs:
    """All sub-datasets of one SentEval STS year concatenated (`STS.input.<name>.txt` with two tab-separated
    sentences, `STS.gs.<name>.txt` with the gold score; lines without a gold score dropped)."""
    first, second, scores = [], [], []
    for name in names:
        inputs = (folder / f"STS.input.{name}.txt").read_text(encoding="utf-8").splitlines()
        gold = (folder / f"STS.gs.{name}.txt").read_text(encoding="utf-8").splitlines()
        if len(inputs) != len(gold):
            raise DataError(f"{folder}: {len(inputs)} sentence pairs but {len(gold)} scores for {name}")
        for line, score in zip(inputs, gold):
            if score.strip():
                a, b = line.split("\t")[:2]
                first.append(_sentence(a))
                second.append(_sentence(b))
                scores.append(float(score))
    return first, second, scores


def read_senteval_sts_b(path: Path) -> Pairs:
    """SentEval's `STSBenchmark/sts-test.csv`: tab-separated genre, file, year, id, score, sentence1, sentence2."""
    first, second, scores = [], [], []
    for line in path.read_text(encoding="utf-8").splitlines():
        fields = line.split("\t")
        if len(fields) >= 7:
            first.append(_sentence(fields[5]))
            second.append(_sentence(fields[6]))
            scores.append(float(fields[4]))
    return first, second, scores


def read_sick(path: Path) -> Pairs:
    """SICK's `SICK_test_annotated.txt`: header `pair_ID sentence_A sentence_B relatedness_score ...`."""
    with open(path, encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
    return ([_sentence(r["sentence_A"]) for r in rows], [_sentence(r["sentence_B"]) for r in rows],
            [float(r["relatedness_score"]) for r in rows])


def senteval_correlations(encode: Encode, root: Path) -> dict[str, float]:
    """Spearman ρ (×100, cosine, no trained regressor) on each SentEval STS set found under `root`
    (SimCSE's `SentEval/data/downstream`), and their mean when all seven are there."""
    results = {}
    for key, (folder, names) in SENTEVAL_YEARS.items():
        if (root / "STS" / folder).is_dir():
            results[f"senteval_{key}"] = pair_spearman(encode, read_senteval_year(root / "STS" / folder, names))
    if (sts_b := root / "STS" / "STSBenchmark" / "sts-test.csv").is_file():
        results["senteval_stsb"] = pair_spearman(encode, read_senteval_sts_b(sts_b))
    if (sick := root / "SICK" / "SICK_test_annotated.txt").is_file():
        results["senteval_sickr"] = pair_spearman(encode, read_sick(sick))
    if len(results) == 7:
        results["senteval_avg"] = sum(results.values()) / 7
    return results


def ir_metrics(scores: torch.Tensor, relevant: Sequence[set[int]], prefix: str) -> dict[str, float]:
    """Passage-retrieval metrics (%, mean over queries) of [Q, N] scores with binary relevance: MRR@10,
    nDCG@10, MAP@100 (precision at each relevant hit in the top 100 over min(|relevant|, 100)), Recall@10/100."""
    depth = min(100, scores.shape[1])
    ranking = scores.topk(depth, dim=1).indices.tolist()
    totals = {"mrr10": 0.0, "ndcg10": 0.0, "map100": 0.0, "recall10": 0.0, "recall100": 0.0}
    for ranked, gold in zip(ranking, relevant):
        hits = [doc in gold for doc in ranked]
        totals["mrr10"] += next((1.0 / (rank + 1) for rank, hit in enumerate(hits[:10]) if hit), 0.0)
        ideal = sum(1.0 / math.log2(rank + 2) for rank in range(min(len(gold), 10)))
        totals["ndcg10"] += sum(1.0 / math.log2(rank + 2) for rank, hit in enumerate(hits[:10]) if hit) / ideal
        found, precision_sum = 0, 0.0
        for rank, hit in enumerate(hits):
            if hit:
                found += 1
                precision_sum += found / (rank + 1)
        totals["map100"] += precision_sum / min(len(gold), 100)
        totals["recall10"] += sum(hits[:10]) / len(gold)
        totals["recall100"] += found / len(gold)
    return {f"{prefix}_{name}": 100.0 * value / len(relevant) for name, value in totals.items()}


def caption_proxies(encode: Encode, captions: Sequence[Sequence[str]], seed: int = 0) -> dict[str, float]:
    """Offline stand-ins for passage retrieval and Wiki-Sections triplets on a COCO-style set: query = image k's
    first caption, corpus = every other caption, relevant = k's other captions (`caption_ir_*`); triplet =
    (k's first caption, its second, the first caption of a seeded other image), correct when the positive is
    closer (`caption_triplet_acc`). Images with one caption are left out."""
    usable = [list(group) for group in captions if len(group) >= 2]
    corpus, owner = [], []
    for image, group in enumerate(usable):
        corpus += group[1:]
        owner += [image] * (len(group) - 1)
    queries = encode([group[0] for group in usable])
    documents = encode(corpus)
    relevant = [{doc for doc, image in enumerate(owner) if image == k} for k in range(len(usable))]
    results = ir_metrics(queries @ documents.T, relevant, "caption_ir")
    generator = torch.Generator().manual_seed(seed)
    shift = torch.randint(1, len(usable), (len(usable),), generator=generator)
    others = (torch.arange(len(usable)) + shift) % len(usable)  # never the image itself
    positives = encode([group[1] for group in usable])
    correct = (queries * positives).sum(1) > (queries * queries[others]).sum(1)
    results["caption_triplet_acc"] = 100.0 * float(correct.float().mean())
    return results


def read_msmarco(root: Path, corpus_max: int | None = None) -> tuple[list[str], list[str], list[set[int]]]:
    """MS MARCO dev (`collection.tsv` pid⇥passage, `queries.dev.small.tsv` qid⇥query, `qrels.dev.tsv`
    qid⇥0⇥pid⇥1) as (queries with a relevant passage, corpus, relevant corpus rows per query); with
    `corpus_max` the corpus is every relevant passage plus the first `corpus_max` others in file order."""
    qrels: dict[str, set[str]] = {}
    for line in (root / "qrels.dev.tsv").read_text(encoding="utf-8").splitlines():
        qid, _, pid, *_ = line.split("\t")
        qrels.setdefault(qid, set()).add(pid)
    lines = (root / "queries.dev.small.tsv").read_text(encoding="utf-8").splitlines()
    queries = [(qid, query) for qid, query in (line.split("\t", 1) for line in lines) if qid in qrels]
    wanted = set().union(*(qrels[qid] for qid, _ in queries)) if queries else set()
    pids, passages, others = [], [], 0
    with open(root / "collection.tsv", encoding="utf-8") as handle:
        for line in handle:
            pid, passage = line.rstrip("\n").split("\t", 1)
            if pid in wanted or corpus_max is None or others < corpus_max:
                others += pid not in wanted
                pids.append(pid)
                passages.append(passage)
    row = {pid: i for i, pid in enumerate(pids)}
    return ([query for _, query in queries], passages,
            [{row[pid] for pid in qrels[qid] if pid in row} for qid, _ in queries])


def msmarco_metrics(encode: Encode, queries: list[str], corpus: list[str],
                    relevant: list[set[int]]) -> dict[str, float]:
    """`msmarco_mrr10` (primary), `_ndcg10`, `_map100`, `_recall10/100` and `_acc1/3/5/10` (a relevant passage in
    the top k) by cosine."""
    scores = encode(queries) @ encode(corpus).T
    results = ir_metrics(scores, relevant, "msmarco")
    top = scores.topk(min(10, scores.shape[1]), dim=1).indices.tolist()
    for k in (1, 3, 5, 10):
        results[f"msmarco_acc{k}"] = 100.0 * sum(bool(set(t[:k]) & gold) for t, gold in zip(top, relevant)) / len(top)
    return results


def wiki_sections_accuracy(encode: Encode, path: Path) -> dict[str, float]:
    """Wiki Sections triplets (`test.csv` with `Sentence1` anchor, `Sentence2` positive, `Sentence3` negative):
    share (%) with the positive closer to the anchor by cosine → `wiki_sections_acc`."""
    with open(path, encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    anchor, positive, negative = (encode([r[column] for r in rows])
                                  for column in ("Sentence1", "Sentence2", "Sentence3"))
    correct = (anchor * positive).sum(1) > (anchor * negative).sum(1)
    return {"wiki_sections_acc": 100.0 * float(correct.float().mean())}
