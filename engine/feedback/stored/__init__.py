"""Where the feedback logic meets the store: the adapters, kept apart from the pure logic.

    selection.py   stored judgements as records, and selecting which (people, judges, batches, dates)
    importing.py   `rlhf prefs import`: a preference file into the store, all or nothing
    auto_rank.py   a judge ranks a stored batch item by item, as a person would
"""
