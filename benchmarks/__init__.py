"""fakespotter's measurements: each module is a script, run from the repository root as
``python -m benchmarks.NAME`` (its docstring says what it measures and writes). They read the
developer face set ../shared/faces where they need faces, and call the library's public API
only. Shared by several: ``reproduce`` (its cached stages: landmarks and features of every
image, the manifest, the sections of docs/results.md)."""
