"""Flags of the evaluation suite: which families run, how often, and where their data lives (README "Evaluations")."""
from __future__ import annotations

import argparse

from cli.flags import add_bool_flag, add_flag
from cli.ranges import COUNT, NON_NEGATIVE_INT, POSITIVE
from engine.evals.schedule import FAMILIES, FREQUENCY_FLAGS, SUITES, parse_eval_suite
from engine.tracking import parse_report_to

def _suite(text: str) -> tuple[str, ...]:
    try:
        return parse_eval_suite(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _named_dirs(text: str) -> list[tuple[str, str]]:
    """`name:dir,name2:dir2` -> [(name, dir), ...]."""
    pairs = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, folder = item.partition(":")
        if not sep or not name or not folder:
            raise argparse.ArgumentTypeError(f"expected name:dir, got {item!r}")
        pairs.append((name, folder))
    return pairs


def _report_to(text: str) -> tuple[str, ...]:
    try:
        return parse_report_to(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def add_eval_suite_flags(parser: argparse.ArgumentParser) -> None:
    """The evaluation families beyond the default retrieval + zero-shot, and their schedule."""
    group = parser.add_argument_group("evaluation suite (README \"Evaluations\")")
    add_flag(group, "--eval_suite", type=_suite, default=SUITES["default"], metavar="SUITE",
             help=f"default (retrieval, zeroshot), full (all of {', '.join(FAMILIES)}) or a comma list of families")
    for family, flag in FREQUENCY_FLAGS.items():
        add_flag(group, f"--{flag}", type=NON_NEGATIVE_INT, default=None,
                 help=f"run the {family} family after every N epochs and the last (0: never; default --eval_freq)")
    add_bool_flag(group, "--eval_first", default=False, help="also evaluate before the first training epoch")
    add_flag(group, "--eval_data_dir", default=None,
             help="root of the text-evaluation data (stsbenchmark.tsv.gz, word_similarity/*.csv; default --data_path)")
    add_flag(group, "--linear_datasets", type=_named_dirs, default=[], metavar="NAME:DIR,...",
             help="extra probe sets, each DIR holding train/ and test/ (or val/) class folders")
    add_flag(group, "--linear_prob_mode", default="pytorch", choices=["pytorch", "sklearn", "sklearn-search"],
             help="linear probe: SGD on one Linear layer, logistic regression with --linear_C, or with C chosen on "
                  "a validation split of train")
    add_flag(group, "--linear_C", type=POSITIVE, default=3.16, help="inverse L2 strength of --linear_prob_mode sklearn")
    add_flag(group, "--knn_k", type=COUNT, default=20, help="neighbours of the weighted k-NN classifier")
    add_flag(group, "--knn_temp", type=POSITIVE, default=0.07, help="temperature of the k-NN vote weights exp(s/T)")
    add_flag(group, "--word_sim_templates", default="imagenet", choices=["imagenet", "none"],
             help="word similarity: one item per pair and ImageNet prompt (80 per pair, ITRA), or the bare words")
    add_flag(group, "--senteval_dir", default=None,
             help="SentEval's data/downstream folder (STS/, SICK/; default <eval_data_dir>/SentEval/data/downstream)")
    add_flag(group, "--msmarco_dir", default=None,
             help="MS MARCO dev: collection.tsv, queries.dev.small.tsv, qrels.dev.tsv (default <eval_data_dir>/msmarco)")
    add_flag(group, "--msmarco_corpus_max", type=COUNT, default=None,
             help="corpus = the relevant passages plus the first N others (default: all 8.8 M passages)")
    add_flag(group, "--wiki_sections_dir", default=None,
             help="Wiki Sections triplets: test.csv (default <eval_data_dir>/wiki_sections)")
    add_flag(group, "--report_to", type=_report_to, default=(), metavar="BACKENDS",
             help="comma list of tensorboard (<output_dir>/tensorboard/) and wandb: train scalars every --log_every "
                  "steps, eval scalars per epoch, the args as text (rank 0)")
    add_flag(group, "--elevater_root", default=None,
             help="ELEVATER datasets as <root>/<dataset>/test/ class folders with classnames.txt and templates.txt")
