"""The service's routes, one FastAPI ``APIRouter`` per group; :func:`m3e_rag.serve.app.create_app` includes them.

Modules: ``embeddings`` (OpenAI's ``/v1/embeddings`` and ``/v1/models``), ``rerank`` (``/v1/rerank``),
``search`` (``/v1/search``), ``browse`` (``/v1/index``, ``/v1/neighbours``, ``/v1/terms``: read-only views of
the index), ``ingest`` (``/v1/ingest``), ``ops`` (``/health``, ``/metrics``), ``ui`` (``/ui``, the playground), and
``deps`` (what every route shares: the service, readiness, the batcher round trip).
"""
