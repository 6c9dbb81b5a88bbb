"""The text kinds BGE-M3's outputs are checked on against FlagEmbedding (tests and benchmarks/bge_m3.py share them)."""

from __future__ import annotations

from typing import Final

#: One passage per kind: Chinese, English, mixed, emoji (no zero-width joiners: m3e-rag strips them).
BGE_M3_TEXTS: Final[dict[str, str]] = {
    "chinese": "北京是中国的首都，也是一座历史悠久的城市，有故宫和长城。",
    "english": "Paris is the capital of France, a city with a long history on the river Seine.",
    "mixed": "M3E 模型 supports 中英文 mixed retrieval，也支持 BM25 hybrid search。",
    "emoji": "我爱🍜和☕，周末去海边🏖️玩 🎉🎉 great fun 😀",
}
#: One query per kind.
BGE_M3_QUERIES: Final[dict[str, str]] = {
    "chinese": "中国的首都是哪里？",
    "english": "What is the capital of France?",
    "mixed": "M3E 支持 hybrid search 吗",
    "emoji": "周末🏖️去哪玩😀",
}
