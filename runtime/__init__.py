"""The ARAS interpreter-simulator. It imports `arasc.isa` only, never the compiler, so a
hand-written `.aras` program runs without it (docs/architecture.md). Its executor lands with
the ISA issue."""
