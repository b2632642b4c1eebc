"""The built-in demo: its toy task, its rule-based judge and its pipeline.

Content, not machinery: stages and specs reach it only by name
(`builtin:demo-...` data, `judge = "demo"`), never by default.
"""
