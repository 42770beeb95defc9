"""The optional C fast path for OTLP protobuf decoding; everything else is in pyproject.toml.

``optional=True``: where the extension cannot be built (no C compiler or Python headers, as in
the python:3.11-slim image) installation still succeeds, with a warning, and collector.otlp uses
its pure-Python decoder.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension("collector._fastotlp", sources=["collector/_fastotlp.c"], optional=True),
    ],
)
