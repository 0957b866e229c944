"""The ARAS instruction set: hardware description, and (with the ISA issue) grammar, opcode
table, parser and printer of `.aras` programs. Imports only the standard library and numpy, so
the runtime can use it without the compiler."""
