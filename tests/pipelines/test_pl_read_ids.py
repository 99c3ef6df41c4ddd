"""Document ids: the fast path (a copy of the source's hashed prefix) gives stable_id's value."""
from hypothesis import given
from hypothesis import strategies as st

from pipelines.config import InputConfig
from pipelines.steps.plan import Source
from pipelines.steps.read import Record, doc_id_of, stable_id

KEYS = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=30) | \
    st.sampled_from(["t/\udcff.c", "a/b.jsonl", "{stdlib}/json/__init__.py"])


@given(key=KEYS, index=st.integers(0, 2**40))
def test_doc_id_is_stable_id_of_key_and_index(key, index):
    source = Source(key, key, "jsonl", 0)
    assert doc_id_of(source, Record(index, "text", None, 4), InputConfig()) == stable_id(key, index)


def test_id_field_ids():
    cfg = InputConfig(id_field="id")
    source = Source("f", "f", "jsonl", 0)
    assert doc_id_of(source, Record(1, "t", 42, 1), cfg) == 42
    assert doc_id_of(source, Record(1, "t", "doc-7", 1), cfg) == stable_id("id", "doc-7")
