"""arasc: compiler toolchain for ARAS, an adaptive low-cost ReRAM processing-in-memory DNN accelerator.

Kept import-free on purpose: `arasc.runtime` and `arasc.isa` live under this namespace and must
not pull in the compiler (docs/architecture.md)."""

__version__ = "0.1.0"
