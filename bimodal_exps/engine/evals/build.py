"""Build the evaluation families and schedule from clip.py's flags; absent data gives one note line per family."""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch

from dataset.errors import DataError
from dataset.transforms import build_retrieval_transform
from dataset.zeroshot import ZeroShotBenchmark, ZeroShotDataset, load_zeroshot_classes
from engine.evals import text
from engine.evals.families import ElevaterFamily, ImageFamily, ProbeSet, ProbeSettings, TextFamily, TextSources
from engine.evals.schedule import FREQUENCY_FLAGS, EvalSchedule
from engine.evaluation import Family, Tokenizer

def schedule_from_args(args: argparse.Namespace) -> EvalSchedule:
    """`--eval_suite`, the per-family frequencies, `--eval_freq` and `--eval_first`."""
    return EvalSchedule(tuple(args.eval_suite), args.eval_freq,
                        {family: getattr(args, flag) for family, flag in FREQUENCY_FLAGS.items()}, args.eval_first)


def _split_folder(root: Path) -> Path | None:
    """`root/test`, else `root/val` (the layout of unimodal_exps' demo folders), else None."""
    return next((root / split for split in ("test", "val") if (root / split).is_dir()), None)


def probe_sets(args: argparse.Namespace, zeroshot: ZeroShotBenchmark | None, notes: list[str]) -> list[ProbeSet]:
    """The zero-shot set (split in halves) and every `--linear_datasets` name:dir with train/ and test/ folders."""
    sets = [ProbeSet("zeroshot", zeroshot.dataset)] if zeroshot is not None else []
    transform = build_retrieval_transform(args.image_res)
    for name, folder in args.linear_datasets:
        root = Path(folder)
        test = _split_folder(root)
        if not (root / "train").is_dir() or test is None:
            notes.append(f"--linear_datasets {name}: {root} has no train/ and test/ (or val/) folders; skipping it")
            continue
        sets.append(ProbeSet(name, ZeroShotDataset(test, transform), ZeroShotDataset(root / "train", transform)))
    return sets


def text_sources(args: argparse.Namespace, notes: list[str], retrieval_set=None) -> TextSources | None:
    """Word-similarity files (gensim's, overridden by `<eval_data_dir>/word_similarity/*.csv`), gensim's Lee
    corpus, STS-B, SentEval and the retrieval set's captions when present; None when there is no text data."""
    root = Path(args.eval_data_dir or args.data_path)
    word_sets = {name: path for name, file in text.GENSIM_WORD_SETS.items()
                 if (path := text.gensim_test_file(file)) is not None}
    if not word_sets:
        notes.append("gensim is not installed: no WordSim-353, SimLex-999 or Lee data (pip install gensim)")
    word_sets.update({name: root / "word_similarity" / file for name, file in text.ITRA_WORD_SETS.items()
                      if (root / "word_similarity" / file).is_file()})
    lee = (text.gensim_test_file("lee.cor"), text.gensim_test_file("similarities0-1.txt"))
    sts_b = root / "stsbenchmark.tsv.gz"
    senteval = Path(args.senteval_dir) if args.senteval_dir else root / "SentEval" / "data" / "downstream"
    captions = ([[retrieval_set.text[j] for j in group] for group in retrieval_set.img2txt]
                if retrieval_set is not None else None)
    msmarco = Path(args.msmarco_dir) if args.msmarco_dir else root / "msmarco"
    wiki = (Path(args.wiki_sections_dir) if args.wiki_sections_dir else root / "wiki_sections") / "test.csv"
    sources = TextSources(word_sets, lee if all(lee) else None, sts_b if sts_b.is_file() else None,
                          senteval if senteval.is_dir() else None, captions,
                          msmarco if (msmarco / "qrels.dev.tsv").is_file() else None, args.msmarco_corpus_max,
                          wiki if wiki.is_file() else None)
    if not (sources.word_sets or sources.lee or sources.sts_b or sources.senteval or sources.captions
            or sources.msmarco or sources.wiki_sections):
        return None
    return sources


def elevater_benchmarks(root: Path, image_res: int) -> list[ZeroShotBenchmark]:
    """`<root>/<dataset>/test/` class folders with classnames.txt/templates.txt, in name order."""
    transform = build_retrieval_transform(image_res)
    benchmarks = []
    for folder in sorted(path for path in root.iterdir() if (path / "test").is_dir()):
        classnames, templates = load_zeroshot_classes(folder / "test")
        benchmarks.append(ZeroShotBenchmark(folder.name, ZeroShotDataset(folder / "test", transform), classnames,
                                            templates))
    return benchmarks


def build_families(args: argparse.Namespace, tokenizer: Tokenizer, device: torch.device,
                   zeroshot: ZeroShotBenchmark | None, retrieval_set=None) -> tuple[list[Family], list[str]]:
    """(families of `--eval_suite` whose data exists, one note per family skipped for absent data)."""
    families: list[Family] = []
    notes: list[str] = []
    if "linear" in args.eval_suite:
        sets = probe_sets(args, zeroshot, notes)
        settings = ProbeSettings(args.linear_prob_mode, args.linear_C, args.knn_k, args.knn_temp, args.seed,
                                 args.batch_size_test, args.val_workers)
        if sets:
            families.append(ImageFamily(sets, device, settings))
        else:
            notes.append("no zero-shot set and no --linear_datasets: skipping linear probe, k-NN and clustering")
    if "nlp" in args.eval_suite:
        sources = text_sources(args, notes, retrieval_set)
        if sources is None:
            notes.append("no text-evaluation data (gensim, --eval_data_dir, --senteval_dir): skipping the nlp family")
        else:
            families.append(TextFamily(tokenizer, device, sources, args.word_sim_templates))
    if "elevater" in args.eval_suite:
        root = args.elevater_root
        if not root or not os.path.isdir(root):
            notes.append(f"--elevater_root {root or '(not given)'} not found: skipping ELEVATER")
        else:
            benchmarks = elevater_benchmarks(Path(root), args.image_res)
            if not benchmarks:
                raise DataError(f"--elevater_root {root}: no <dataset>/test/ class folders")
            families.append(ElevaterFamily(benchmarks, tokenizer, device, args.batch_size_test, args.val_workers))
    return families, notes
