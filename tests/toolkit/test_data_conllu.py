"""CoNLL-U: (form, UPOS) per word, skipping comments, multiword ranges and empty nodes."""

import re
from pathlib import Path

import pytest

from rnnkit.toolkit.data import DataError, read_conllu

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
EWT = SHARED_DATA / "ud-english-ewt"

SAMPLE = """\
# sent_id = 1
# text = I don't know.
1\tI\tI\tPRON\tPRP\t_\t4\tnsubj\t_\t_
2-3\tdon't\t_\t_\t_\t_\t_\t_\t_\t_
2\tdo\tdo\tAUX\tVBP\t_\t4\taux\t_\t_
3\tn't\tnot\tPART\tRB\t_\t4\tadvmod\t_\t_
4\tknow\tknow\tVERB\tVB\t_\t0\troot\t_\t_
4.1\tit\tit\tPRON\tPRP\t_\t_\t_\t4:obj\t_
5\t.\t.\tPUNCT\t.\t_\t4\tpunct\t_\t_

# sent_id = 2
1\tYes\tyes\tINTJ\tUH\t_\t0\troot\t_\t_
"""


def write(tmp_path, text, name="sample.conllu"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_reads_words_and_upos(tmp_path):
    sentences = read_conllu(write(tmp_path, SAMPLE))  # last sentence has no closing blank line
    assert sentences == [
        [("I", "PRON"), ("do", "AUX"), ("n't", "PART"), ("know", "VERB"), (".", "PUNCT")],
        [("Yes", "INTJ")],
    ]


def test_wrong_number_of_fields_gives_the_line(tmp_path):
    path = write(tmp_path, SAMPLE.replace("4\tknow\tknow\tVERB", "4\tknow\tVERB"))
    message = f"{path}: line 7: expected 10 tab-separated fields, got 9 in '4\\tknow\\tVERB"
    with pytest.raises(DataError, match="^" + re.escape(message)):
        read_conllu(path)


def test_space_separated_line_is_one_field(tmp_path):
    path = write(tmp_path, "1 I I PRON PRP _ 0 root _ _\n")
    with pytest.raises(DataError, match=re.escape(f"{path}: line 1: expected 10 tab-separated")):
        read_conllu(path)


def test_bad_id(tmp_path):
    path = write(tmp_path, SAMPLE.replace("1\tYes", "x\tYes"))
    message = f"{path}: line 12, column 'ID': expected an ID like 1, 3-4 or 8.1, got 'x'"
    with pytest.raises(DataError, match="^" + re.escape(message) + "$"):
        read_conllu(path)


def test_no_sentence(tmp_path):
    path = write(tmp_path, "# only a comment\n\n")
    with pytest.raises(DataError, match=re.escape(f"{path}: expected at least one sentence")):
        read_conllu(path)


def test_file_errors(tmp_path):
    with pytest.raises(DataError, match=re.escape("expected a file, got a directory")):
        read_conllu(tmp_path)
    with pytest.raises(DataError, match=re.escape("expected text, got an empty file")):
        read_conllu(write(tmp_path, ""))


@pytest.mark.skipif(not EWT.is_dir(), reason=f"shared data not found at {EWT}")
def test_ud_english_ewt_dev():
    sentences = read_conllu(EWT / "en_ewt-ud-dev.conllu")
    # The counts of the treebank's own statistics: syntactic words, no ranges or empty nodes.
    assert len(sentences) == 2001
    assert sum(map(len, sentences)) == 25147
    assert len({tag for sentence in sentences for _, tag in sentence}) == 17
