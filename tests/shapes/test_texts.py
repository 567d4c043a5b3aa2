"""Open documents' texts sent to the worker once (shapes/texts.py): the server's bookkeeping and
the worker's store, message by message, as the pipe carries them."""

from __future__ import annotations

import pytest

from torch_lsp.shapes.texts import HeldTexts, SentTexts, digest


def job(number: int, overlay: dict[str, str]) -> dict:
    return {"type": "job", "id": number, "key": f"doc{number}", "spec": {"timeout": 5.0, "overlay": overlay}}


def deliver(held: HeldTexts, messages: list[dict]) -> list[dict]:
    """What the worker makes of the messages written for jobs: each job's spec, texts in place."""
    return [held.resolve(m["spec"]) for m in messages if not held.accept(m)]


def test_a_text_goes_once_and_later_jobs_name_it():
    sent, held = SentTexts(), HeldTexts()
    overlay = {"/w/a.py": "import torch\n", "/w/b.py": "x = 1\n"}
    first = sent.messages_for(job(1, overlay))
    assert [m["type"] for m in first] == ["texts", "job"]
    assert sorted(first[0]["texts"].values()) == sorted(overlay.values())
    assert "overlay" not in first[1]["spec"] and first[1]["spec"]["timeout"] == 5.0
    second = sent.messages_for(job(2, {**overlay, "/w/b.py": "x = 2\n"}))
    assert second[0] == {"type": "texts", "texts": {digest("x = 2\n"): "x = 2\n"}}  # only the edited one
    specs = deliver(held, first + second)
    assert specs[0]["overlay"] == overlay
    assert specs[1]["overlay"] == {"/w/a.py": "import torch\n", "/w/b.py": "x = 2\n"}
    assert "overlay_refs" not in specs[1]


def test_a_job_without_open_documents_sends_no_texts():
    messages = SentTexts().messages_for(job(1, {}))
    assert [m["type"] for m in messages] == ["job"] and HeldTexts().resolve(messages[0]["spec"])["overlay"] == {}


def test_past_the_budget_the_least_recently_used_texts_are_forgotten_never_those_of_the_job():
    sent, held = SentTexts(budget_bytes=25), HeldTexts()
    messages = []
    for version in range(6):  # one document edited: each version's text is 10 bytes
        messages += sent.messages_for(job(version, {"/w/a.py": f"x = {version:05d}\n"}))
    forgotten = [name for m in messages if m["type"] == "forget_texts" for name in m["digests"]]
    assert forgotten == [digest(f"x = {v:05d}\n") for v in range(4)]  # at most 2 kept (20 <= 25 bytes)
    specs = deliver(held, messages)  # every job was resolved before its texts were forgotten
    assert [s["overlay"]["/w/a.py"] for s in specs] == [f"x = {v:05d}\n" for v in range(6)]
    assert held.resolve(sent.messages_for(job(9, {"/w/a.py": "x = 00005\n"}))[0]["spec"])["overlay"]
    big = sent.messages_for(job(10, {"/w/big.py": "y" * 100}))  # larger than the budget on its own
    assert big[0]["type"] == "texts" and not any(digest("y" * 100) in m.get("digests", ()) for m in big)


def test_a_text_the_worker_never_got_is_a_clear_error():
    with pytest.raises(ValueError, match="never arrived"):
        HeldTexts().resolve({"overlay_refs": {"/w/a.py": digest("lost\n")}})


def test_the_cache_key_names_texts_by_digest_and_still_tells_them_apart():
    from torch_lsp.analysis.plan import build_plan
    from torch_lsp.shapes.spec import JobSpec

    plan = build_plan("import torch\n", "/w/main.py")
    key = JobSpec(key="/w/main.py", main=plan, overlay={"/w/a.py": "x = 1\n"}).cache_key()
    assert key == JobSpec(key="other", main=plan, overlay={"/w/a.py": "x = 1\n"}).cache_key()
    assert key != JobSpec(key="/w/main.py", main=plan, overlay={"/w/a.py": "x = 2\n"}).cache_key()
    assert key != JobSpec(key="/w/main.py", main=plan, overlay={"/w/b.py": "x = 1\n"}).cache_key()


def test_digests_are_remembered_within_a_bounded_memory():
    from torch_lsp.shapes import texts

    first = "a" * 1000 + "\n"
    assert digest(first) == digest("a" * 1000 + "\n")  # by content, whichever object
    for number in range(200):  # far more text than the memo keeps
        digest(f"{number}".ljust(texts.MEMO_BYTES // 100, "x"))
    assert texts._memo_bytes <= texts.MEMO_BYTES
    assert sum(len(text) for text, _ in texts._memo.values()) == texts._memo_bytes
