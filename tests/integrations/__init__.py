"""Tests of the LangChain and LlamaIndex adapters, with the frameworks' own machinery."""
