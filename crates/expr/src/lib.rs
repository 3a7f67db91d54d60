//! The attribute expression language: lexer, parser, type checker, compiled evaluation.
