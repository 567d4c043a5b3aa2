"""A document's queued shape job is made of its newest text when its turn comes
(server/shapes.py, `_next_job`).

While many documents are typed into, each waits a round of the others' jobs; its queued job
ran the version of its last analysis, up to two debounces older than its text when it started.
When the worker says the document is next, edits still waiting out their debounce are analysed
at once (`DocumentStore.hurry`: tests/unit/test_documents.py), and that analysis's job takes the
queued one's place. The announcements themselves, from a real worker:
tests/shapes/test_engine.py::test_the_engine_hears_which_queued_driver_job_starts_next.
"""

from __future__ import annotations

from types import SimpleNamespace

from torch_lsp.server.shapes import ShapeService

URI = "file:///project/model.py"


def test_the_document_announced_next_is_hurried_and_no_other():
    hurried: list[str] = []

    class OpenDocuments:
        def __contains__(self, uri: str) -> bool:
            return uri == URI

        def hurry(self, uri: str) -> bool:
            hurried.append(uri)
            return True

    service = ShapeService(SimpleNamespace(documents=OpenDocuments()))
    service._next_job(URI)
    service._next_job("file:///project/closed.py")  # closed since (or a notebook's job): nothing
    service._next_job(URI + "#batch")  # not a document's key
    assert hurried == [URI]
